"""Fixtures for the bot tests: a real node in a subprocess, a fake Bot API, the real bot.

The bot under test is the production one; only `[bot] api_url` points at the fake server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import BotRunner, BotSettings, bot_running
from tests.bot.fake_telegram import Call, FakeBotAPI

REPO = Path(__file__).resolve().parents[2]
TOKEN = "123456:TEST-token-that-must-never-be-logged"
OWNER, STAFF, STRANGER = 1001, 2002, 3003
START_TIMEOUT = 30.0


class NodeExited(RuntimeError):
    """`serve` exited before it listened."""


class RealNode:
    """`python -m node serve` over its own data dir, with owner and staff API tokens for the bot."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self.owner_token = ""
        self.staff_token = ""
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def env(self, port: int) -> dict[str, str]:
        # Unknown SHOPNODE_* keys are a config error, and the developer's own settings
        # (a bot token!) must not leak in: start from the environment without any of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPNODE_")}
        env.update(
            SHOPNODE_NODE_DATA_DIR=str(self.data_dir),
            SHOPNODE_API_HOST="127.0.0.1",
            SHOPNODE_API_PORT=str(port),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        return env

    def cli(self, *args: str) -> str:
        """Run one shopnode command against this node's data; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "node", *args],
            cwd=self.data_dir,
            env=self.env(0),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"shopnode {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        """Create the bot's tokens and serve on a free port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.owner_token = self.create_token("bot", "owner")
        self.staff_token = self.create_token("bot-staff", "staff")
        for attempt in range(3):  # another process may take the free port first
            try:
                self.serve(free_port())
                return
            except NodeExited:
                if attempt == 2:
                    raise

    def create_token(self, name: str, role: str) -> str:
        """A new API token's secret (the last line `shopnode token create` prints)."""
        return self.cli("token", "create", "--name", name, "--role", role).strip().splitlines()[-1]

    def access_lines(self) -> list[str]:
        """The node's access-log lines so far (method, route pattern or "(no route)", status)."""
        return [line for line in list(self.output) if "aiohttp.access" in line]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def serve(self, port: int) -> None:
        """Start `serve` on `port` and wait until it listens (used again after stop())."""
        self.output = []
        self._listening.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "serve"],
            cwd=self.data_dir,
            env=self.env(port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise NodeExited("node exited at start:\n" + "".join(self.output)[-3000:])
            if self._listening.wait(0.05) or self._healthy():
                return
        self.stop()
        raise RuntimeError("node did not start in time:\n" + "".join(self.output)[-3000:])

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            found = re.search(r"listening on (http://[\w.\-\[\]:]+)", line)
            if found:
                self.url = found.group(1).rstrip("/")
                self._listening.set()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    # The API, as a test sets up a shop and checks what the bot did

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token or self.owner_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def add_customer(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.api("POST", "/customers", {"name": name, **fields})

    def charge(self, customer: dict[str, Any], amount: int, note: str = "Opening balance") -> None:
        body = {"type": "debit", "amount": amount, "description": note}
        self.api("POST", f"/customers/{customer['id']}/ledger", body)

    def sell(self, customer: dict[str, Any], total: int, method: str = "cash") -> dict[str, Any]:
        body = {"customer_id": customer["id"], "total": total, "payment_method": method}
        return self.api("POST", "/sales", body)

    def customer(self, customer: dict[str, Any]) -> dict[str, Any]:
        return self.api("GET", f"/customers/{customer['id']}")

    def ledger(self, customer: dict[str, Any]) -> list[dict[str, Any]]:
        return self.api("GET", f"/customers/{customer['id']}/ledger?limit=100")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(data_dir: Path) -> RealNode:
    node = RealNode(data_dir)
    try:
        node.start()
    except Exception:
        node.stop()
        raise
    return node


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """One real node for the bot tests (instead of tests/conftest.py's node per test):
    starting a node per test would double the suite's time, and each test makes its own
    customers, so none sees another's."""
    shared = start_node(tmp_path_factory.mktemp("node"))
    yield shared
    shared.stop()


@pytest.fixture
def empty_node(tmp_path: Path) -> Iterator[RealNode]:
    """A real node of its own, for tests about the whole shop (dues, digest)."""
    own = start_node(tmp_path / "node")
    yield own
    own.stop()


@pytest.fixture
def tag() -> str:
    """A word no other test's customers contain, so searches see only this test's."""
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(6))


@pytest.fixture
async def telegram() -> AsyncIterator[FakeBotAPI]:
    fake = FakeBotAPI(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


def bot_settings(node: RealNode, telegram: FakeBotAPI, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = dict(
        token=TOKEN,
        node_url=node.url,
        node_token=node.owner_token,
        node_staff_token=node.staff_token,
        owners={OWNER},
        staff={STAFF},
        api_url=telegram.url,
    )
    values.update(overrides)
    return BotSettings(**values)


async def running_bot(settings: BotSettings) -> AsyncIterator[BotRunner]:
    async with bot_running(settings) as runner:
        await runner.wait_running(10)
        yield runner


async def wait_state(runner: BotRunner, state: str, timeout: float = 10.0) -> None:
    """Wait until the bot runner reports `state`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while runner.state != state:
        assert asyncio.get_running_loop().time() < deadline, f"still {runner.state!r}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def bot(node: RealNode, telegram: FakeBotAPI) -> AsyncIterator[BotRunner]:
    """The real bot, in this test's event loop, against the shared node."""
    async for runner in running_bot(bot_settings(node, telegram)):
        yield runner


class Chat:
    """One Telegram user's side of the private chat with the bot."""

    def __init__(self, telegram: FakeBotAPI, user_id: int) -> None:
        self.telegram = telegram
        self.user_id = user_id
        self._tapped_at = 0
        self.last_tap: dict[str, Any] = {}

    async def send(self, text: str, expect: str = "sendMessage") -> Call:
        """Send `text`; the bot's next `expect` call to this chat."""
        start = len(self.telegram.calls)
        await self.telegram.send(self.user_id, text)
        return await self.telegram.wait_for(
            expect, lambda c: int(c.params.get("chat_id", 0)) == self.user_id, start
        )

    async def tap(self, shown: Call, label: str) -> Call:
        """Tap the button labelled `label` on a message the bot sent; the callback answer."""
        buttons = dict(self.telegram.messages_buttons(shown.result))
        assert label in buttons, f"no button {label!r} among {list(buttons)}"
        return await self.tap_data(shown.result, buttons[label])

    async def tap_data(self, message: dict[str, Any], data: str, stale: bool = False) -> Call:
        """Tap a button by its callback_data; the callback answer."""
        self._tapped_at = len(self.telegram.calls)
        update = await self.telegram.tap(self.user_id, message, data, stale=stale)
        self.last_tap = update
        return await self.answer_to(update)

    async def answer_to(self, update: dict[str, Any]) -> Call:
        query_id = update["callback_query"]["id"]
        return await self.telegram.wait_for(
            "answerCallbackQuery",
            lambda c: c.params.get("callback_query_id") == query_id,
            self._tapped_at,
        )

    def data_of(self, shown: Call, label: str) -> str:
        """The callback_data of a button the message shows now."""
        return dict(self.telegram.messages_buttons(shown.result))[label]

    async def edited(self, shown: Call) -> Call:
        """The bot's edit of the message it sent as `shown`, after the last tap."""
        message_id = shown.result["message_id"]
        return await self.telegram.wait_for(
            "editMessageText",
            lambda c: int(c.params.get("message_id", 0)) == message_id,
            self._tapped_at,
        )

    def buttons(self, shown: Call) -> list[str]:
        """Labels of the buttons the message shows now."""
        return [label for label, _ in self.telegram.messages_buttons(shown.result)]


@pytest.fixture
def owner(telegram: FakeBotAPI) -> Chat:
    return Chat(telegram, OWNER)


@pytest.fixture
def staff(telegram: FakeBotAPI) -> Chat:
    return Chat(telegram, STAFF)


@pytest.fixture
def stranger(telegram: FakeBotAPI) -> Chat:
    return Chat(telegram, STRANGER)
