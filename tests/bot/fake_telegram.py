"""A small Bot API server on 127.0.0.1 for driving the real bot over real HTTP.

Routes `/bot{token}/{method}` like api.telegram.org, accepts JSON, form-encoded and
multipart bodies, serves `getUpdates` with offsets and long polling, keeps the messages it
"sent" (so taps can be made on them) and records every call for the tests to await.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

BOT_ID = 7000001
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Shop", "username": "shop_test_bot"}
# Parameters python-telegram-bot sends JSON-encoded inside form fields.
JSON_FIELDS = {
    "reply_markup",
    "reply_parameters",
    "commands",
    "scope",
    "allowed_updates",
    "entities",
    "caption_entities",
    "link_preview_options",
}


# Telegram never reuses a message id in a chat; neither do fake servers across tests.
_message_ids = itertools.count(100)


@dataclass
class Call:
    """One Bot API request the bot made."""

    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]]
    result: Any = None

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback_data) of every inline button, row by row."""
        markup = self.params.get("reply_markup") or {}
        rows = markup.get("inline_keyboard") or []
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]


class FakeBotAPI:
    """The fake server; `start()` it, point `[bot] api_url` at `url`, then chat."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._changed = asyncio.Condition()
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.offline = False  # True: every request fails with 502, like a broken network path

    # Server life

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # No access log: the fake stands in for Telegram, and its URLs carry the token.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # What a test does: the user's side of the chat

    async def send(self, user_id: int, text: str, chat_type: str = "private") -> dict[str, Any]:
        """The user sends `text`; returns the message as the bot will see it."""
        chat = {"id": user_id, "type": chat_type, "first_name": f"User{user_id}"}
        if chat_type != "private":
            chat = {"id": -user_id, "type": chat_type, "title": "Group"}
        message: dict[str, Any] = {
            "message_id": next(_message_ids),
            "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        self.messages[(chat["id"], message["message_id"])] = message
        await self.push_update({"message": message})
        return message

    async def tap(
        self, user_id: int, message: dict[str, Any], data: str, stale: bool = False
    ) -> dict[str, Any]:
        """The user taps a button with `data` on `message`; returns the update.

        The message travels as the bot last showed it, or, with `stale`, as given: a client
        that has not yet seen the bot's edit still shows, and taps, the old buttons.
        """
        key = (message["chat"]["id"], message["message_id"])
        shown = message if stale else self.messages[key]
        return await self.push_update(
            {
                "callback_query": {
                    "id": str(next(self._query_ids)),
                    "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
                    "message": json.loads(json.dumps(shown)),
                    "chat_instance": "1",
                    "data": data,
                }
            }
        )

    async def redeliver(self, update: dict[str, Any]) -> None:
        """Deliver an update again, as Telegram does when its offset was never confirmed."""
        async with self._changed:
            self.updates.append(json.loads(json.dumps(update)))
            self._changed.notify_all()

    async def push_update(self, body: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **body}
        async with self._changed:
            self.updates.append(update)
            self._changed.notify_all()
        return update

    async def wait_for(
        self, method: str, predicate: Any = None, start: int = 0, timeout: float = 5.0
    ) -> Call:
        """The first call of `method` from index `start` on that satisfies `predicate`."""

        def found() -> Call | None:
            for call in self.calls[start:]:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        call = found()
        assert call is not None
        return call

    def messages_buttons(self, message: dict[str, Any]) -> list[tuple[str, str]]:
        """(label, callback_data) of the buttons the message shows now."""
        current = self.messages[(message["chat"]["id"], message["message_id"])]
        rows = (current.get("reply_markup") or {}).get("inline_keyboard") or []
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]

    def calls_of(self, method: str, start: int = 0) -> list[Call]:
        return [c for c in self.calls[start:] if c.method == method]

    # The Bot API side

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        if self.offline:
            return _error(502, "Bad Gateway")
        method = request.match_info["method"]
        params, files = await _read_params(request)
        handler = getattr(self, "_api_" + method.lower(), None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        result = await handler(params, files)
        if method.lower() != "getupdates":
            async with self._changed:
                self.calls.append(Call(method, params, files, result))
                self._changed.notify_all()
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    async def _api_getme(self, params: dict, files: dict) -> Any:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _api_getupdates(self, params: dict, files: dict) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        async with self._changed:
            if offset:
                # An offset confirms every update before it: they are never sent again.
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates and timeout > 0 and not self._closing:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self.updates) or self._closing),
                        timeout,
                    )
                except TimeoutError:
                    pass
            return self.updates[:limit]

    async def _api_deletewebhook(self, params: dict, files: dict) -> Any:
        return True

    async def _api_setmycommands(self, params: dict, files: dict) -> Any:
        return True

    async def _api_answercallbackquery(self, params: dict, files: dict) -> Any:
        return True

    async def _api_sendmessage(self, params: dict, files: dict) -> Any:
        message = self._new_message(params)
        message["text"] = params["text"]
        return message

    async def _api_senddocument(self, params: dict, files: dict) -> Any:
        message = self._new_message(params)
        field = str(params.get("document") or "document").removeprefix("attach://")
        name, content = files.get(field, ("document", b""))
        message["document"] = {
            "file_id": f"doc{message['message_id']}",
            "file_unique_id": f"u{message['message_id']}",
            "file_name": name,
            "file_size": len(content),
        }
        if params.get("caption"):
            message["caption"] = params["caption"]
        return message

    async def _api_sendphoto(self, params: dict, files: dict) -> Any:
        message = self._new_message(params)
        field = str(params.get("photo") or "photo").removeprefix("attach://")
        _, content = files.get(field, ("photo", b""))
        message["photo"] = [{"file_id": f"photo{message['message_id']}",
                             "file_unique_id": f"p{message['message_id']}", "width": 1,
                             "height": 1, "file_size": len(content)}]  # fmt: skip
        if params.get("caption"):
            message["caption"] = params["caption"]
        return message

    async def _api_editmessagetext(self, params: dict, files: dict) -> Any:
        message = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if message is None:
            return _error(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup")
        if message.get("text") == params["text"] and message.get("reply_markup") == markup:
            return _error(400, "Bad Request: message is not modified")
        message["text"] = params["text"]
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return message

    async def _api_editmessagereplymarkup(self, params: dict, files: dict) -> Any:
        message = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if message is None:
            return _error(400, "Bad Request: message to edit not found")
        message.pop("reply_markup", None)
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    def _new_message(self, params: dict) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": next(_message_ids),
            "from": BOT_USER,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
        }
        reply_to = (params.get("reply_parameters") or {}).get("message_id")
        reply_to = reply_to or params.get("reply_to_message_id")
        if reply_to and (chat_id, int(reply_to)) in self.messages:
            quoted = dict(self.messages[(chat_id, int(reply_to))])
            quoted.pop("reply_to_message", None)  # Telegram nests only one level
            message["reply_to_message"] = quoted
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return message


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    params: dict[str, Any] = {}
    files: dict[str, tuple[str, bytes]] = {}
    content_type = request.content_type
    if content_type == "application/json":
        body = await request.read()
        params = json.loads(body) if body else {}
    elif content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:
                files[part.name] = (part.filename, bytes(await part.read()))
            else:
                params[part.name] = await part.text()
    else:
        params = dict(await request.post())
    params.update(request.query)
    for name in JSON_FIELDS & params.keys():
        if isinstance(params[name], str):
            params[name] = json.loads(params[name])
    return params, files


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": status, "description": description}, status=status
    )
