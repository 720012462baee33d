"""Customers on Telegram (the bot's own routes) and the events feed (owners, integrations).

Invites are made by owners and staff (the bot's `/invite`); everything else under
/api/v1/telegram is the bot's work for customers and needs an owner token: the bot decides
which Telegram user may see what, the node keeps links, codes and sent messages.
"""

from __future__ import annotations

import re
from functools import partial

from aiohttp import web

from node import events, telegram
from node import validation as v
from node.api.auth import require_owner, require_role
from node.api.keys import CONFIG
from node.api.params import json_response, path_id, per_page, read_json, read_query, whole_number
from node.api.problems import Malformed
from node.writer import read, write

routes = web.RouteTableDef()

MAX_TELEGRAM_ID = 2**53 - 1  # Telegram's user ids fit in 52 bits
_TELEGRAM_ID = re.compile(r"[1-9][0-9]{0,15}")
TELEGRAM_ID_SCHEMA = {"type": "string", "pattern": f"^{_TELEGRAM_ID.pattern}$"}
telegram_user_id = v.integer(minimum=1, maximum=MAX_TELEGRAM_ID).describe("a Telegram user id")
code = v.matching(re.compile(r"[A-Za-z0-9_-]{16,64}"), 64, "is not an invite code",
                  "the one-time code of an invite link")  # fmt: skip

EVENTS_QUERY = (
    whole_number("after", 0, 10**18, 0, "cursor: events after this one (a `cursor` or "
                 "`next_cursor` read before); 0: from the start"),
    per_page(100),
)  # fmt: skip
OVERDUE_QUERY = (
    whole_number("min_amount", 0, 10**12, 0, "owing more than this (minor units)"),
    whole_number("after_days", 0, 3650, 0, "owing for at least this many days"),
)
INVITE_INPUT = v.Body("TelegramInviteInput", {
    "relink": v.boolean.describe("make a new code even if the customer is linked already "
                                 "(linking with it replaces the old link)"),
}, optional=True)  # fmt: skip
CODE_INPUT = v.Body("TelegramCodeInput", {"code": code}, required=("code",))
LINK_INPUT = v.Body("TelegramLinkInput", {"code": code, "telegram_user_id": telegram_user_id},
                    required=("code", "telegram_user_id"))  # fmt: skip
LINK_UPDATE = v.Body("TelegramLinkUpdate", {
    "receipts": v.boolean.describe("send receipts to this customer"),
}, required=("receipts",))  # fmt: skip
CURSOR_INPUT = v.Body("ReceiptsCursorInput", {
    "cursor": v.integer(minimum=0, maximum=10**18).describe("events up to here are handled"),
}, required=("cursor",))  # fmt: skip
RECEIPT_INPUT = v.Body("ReceiptClaimInput", {"change_id": v.uuid}, required=("change_id",))
REMINDER_INPUT = v.Body("ReminderClaimInput", {
    "customer_id": v.uuid,
    "every_days": v.integer(minimum=1, maximum=365).describe("at most one reminder per "
                                                             "customer in this many days"),
}, required=("customer_id", "every_days"))  # fmt: skip


def with_shop(request: web.Request, body: dict) -> dict:
    """What the customer reads names the shop (`[node] name`)."""
    return {**body, "shop_name": request.app[CONFIG].node.name}


def path_telegram_user(request: web.Request) -> int:
    raw = request.match_info["telegram_user_id"]
    if not _TELEGRAM_ID.fullmatch(raw) or int(raw) > MAX_TELEGRAM_ID:
        raise Malformed([("telegram_user_id", "must be a Telegram user id")],
                        f"'{raw}' is not a Telegram user id")  # fmt: skip
    return int(raw)


@routes.get("/api/v1/events")
async def list_events(request: web.Request) -> web.Response:
    """The node's facts in commit order after a cursor (owners and integrations)."""
    require_role(request, ("owner", "integration"), "read the events feed")
    query = read_query(request, EVENTS_QUERY)
    return json_response(await read(partial(events.events_after, query["after"], query["limit"])))


@routes.post("/api/v1/customers/{id}/telegram/invite")
async def create_invite(request: web.Request) -> web.Response:
    """A one-time code to link the customer's Telegram account (owners and staff)."""
    customer_id = path_id(request)
    fields = INVITE_INPUT.parse(await read_json(request, allow_empty=True))
    invite = await write(partial(telegram.create_invite, customer_id, fields.get("relink", False)))
    return json_response(invite, 201)


@routes.post("/api/v1/telegram/invites/check")
async def check_invite(request: web.Request) -> web.Response:
    """What the customer confirms before linking; the same 404 for every code not good now."""
    require_owner(request, "check invite codes")
    fields = CODE_INPUT.parse(await read_json(request))
    return json_response(with_shop(request, telegram.check_invite(fields["code"])))


@routes.post("/api/v1/telegram/links")
async def link_account(request: web.Request) -> web.Response:
    """Use an invite code: link its customer to a Telegram account."""
    require_owner(request, "link Telegram accounts")
    fields = LINK_INPUT.parse(await read_json(request))
    link = await write(partial(telegram.link_account, fields["code"], fields["telegram_user_id"]))
    return json_response(with_shop(request, link), 201)


@routes.get("/api/v1/telegram/links/{telegram_user_id}")
async def get_link(request: web.Request) -> web.Response:
    """The customer a Telegram account is linked to."""
    require_owner(request, "read Telegram links")
    return json_response(with_shop(request, telegram.link_of(path_telegram_user(request))))


@routes.patch("/api/v1/telegram/links/{telegram_user_id}")
async def update_link(request: web.Request) -> web.Response:
    """Receipts on or off."""
    require_owner(request, "change Telegram links")
    user = path_telegram_user(request)
    fields = LINK_UPDATE.parse(await read_json(request))
    link = await write(partial(telegram.set_receipts, user, fields["receipts"]))
    return json_response(with_shop(request, link))


@routes.delete("/api/v1/telegram/links/{telegram_user_id}")
async def unlink(request: web.Request) -> web.Response:
    """Erase the link."""
    require_owner(request, "unlink Telegram accounts")
    await write(partial(telegram.unlink, path_telegram_user(request)))
    return json_response({"message": "Telegram account unlinked"})


@routes.get("/api/v1/telegram/receipts/cursor")
async def receipts_cursor(request: web.Request) -> web.Response:
    """Where the bot's receipts left off in the events feed."""
    require_owner(request, "read the receipts cursor")
    return json_response({"cursor": telegram.receipts_cursor()})


@routes.put("/api/v1/telegram/receipts/cursor")
async def set_receipts_cursor(request: web.Request) -> web.Response:
    require_owner(request, "move the receipts cursor")
    fields = CURSOR_INPUT.parse(await read_json(request))
    cursor = await write(partial(telegram.set_receipts_cursor, fields["cursor"]))
    return json_response({"cursor": cursor})


@routes.post("/api/v1/telegram/receipts")
async def claim_receipt(request: web.Request) -> web.Response:
    """Claim the receipt of one change, once; says whether to send it and what it says."""
    require_owner(request, "send receipts")
    fields = RECEIPT_INPUT.parse(await read_json(request))
    claim = await write(partial(telegram.claim_receipt, fields["change_id"]))
    if not claim["send"]:
        return json_response(claim)
    return json_response(with_shop(request, claim), 201)


@routes.post("/api/v1/telegram/reminders")
async def claim_reminder(request: web.Request) -> web.Response:
    """Claim a reminder to a linked customer who owes; 409 if reminded recently."""
    require_owner(request, "send reminders")
    fields = REMINDER_INPUT.parse(await read_json(request))
    claim = await write(
        partial(telegram.claim_reminder, fields["customer_id"], fields["every_days"])
    )
    return json_response(with_shop(request, claim), 201)


@routes.get("/api/v1/telegram/overdue")
async def overdue(request: web.Request) -> web.Response:
    """Linked customers owing more than an amount for at least some days."""
    require_owner(request, "list overdue customers")
    query = read_query(request, OVERDUE_QUERY)
    return json_response(
        await read(partial(telegram.overdue, query["min_amount"], query["after_days"]))
    )


@routes.delete("/api/v1/telegram/messages/{id}")
async def release_message(request: web.Request) -> web.Response:
    """Release a claimed receipt or reminder the bot could not deliver."""
    require_owner(request, "release messages")
    await write(partial(telegram.release_message, path_id(request)))
    return json_response({"message": "released"})
