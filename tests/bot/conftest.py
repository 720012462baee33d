"""Fixtures for the bot tests: a real node in a subprocess (tests/processes.py starts it),
a fake Bot API, the real bot.

The bot under test is the production one; only `[bot] api_url` points at the fake server.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import BotRunner, BotSettings, bot_running
from tests.bot.fake_telegram import Call, FakeBotAPI

# REPO and free_port are re-exported: bot tests import them from here as well.
from tests.processes import REPO, NodeProcess, free_port, shopnode, start_node  # noqa: F401

TOKEN = "123456:TEST-token-that-must-never-be-logged"
OWNER, STAFF, STRANGER = 1001, 2002, 3003
START_TIMEOUT = 30.0


class RealNode:
    """`python -m node serve` over its own data dir, with owner and staff API tokens for the bot."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self.owner_token = ""
        self.staff_token = ""
        self.server: NodeProcess | None = None

    @property
    def log(self) -> Path:
        """The node's log, next to its data dir (stdout beside it, `.out`)."""
        return self.data_dir.with_name(f"{self.data_dir.name}.log")

    def env(self, port: int) -> dict[str, str]:
        # The launcher leaves the developer's own SHOPNODE_* settings (a bot token!) out.
        return {
            "SHOPNODE_NODE_DATA_DIR": str(self.data_dir),
            "SHOPNODE_API_HOST": "127.0.0.1",
            "SHOPNODE_API_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }

    def cli(self, *args: str) -> str:
        """Run one shopnode command against this node's data; its stdout."""
        done = shopnode(*args, env=self.env(0), cwd=self.data_dir, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"shopnode {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        """Create the bot's tokens and serve on a free port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.owner_token = self.create_token("bot", "owner")
        self.staff_token = self.create_token("bot-staff", "staff")
        self.serve(0)

    def create_token(self, name: str, role: str) -> str:
        """A new API token's secret (the last line `shopnode token create` prints)."""
        return self.cli("token", "create", "--name", name, "--role", role).strip().splitlines()[-1]

    @property
    def output(self) -> list[str]:
        """The lines the node has written so far (this run's), log then stdout."""
        return self.server.output().splitlines(keepends=True) if self.server else []

    def access_lines(self) -> list[str]:
        """The node's access-log lines so far (method, route pattern or "(no route)", status)."""
        return [line for line in self.output if "aiohttp.access" in line]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def serve(self, port: int) -> None:
        """Start `serve` on `port` (0: a free one) and wait until it listens (used again
        after stop(), on the same port)."""
        self.server = start_node(self.env(port), self.log, cwd=self.data_dir)
        self.url = self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

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


def start_real_node(data_dir: Path) -> RealNode:
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
    shared = start_real_node(tmp_path_factory.mktemp("node"))
    yield shared
    shared.stop()


@pytest.fixture
def empty_node(tmp_path: Path) -> Iterator[RealNode]:
    """A real node of its own, for tests about the whole shop (dues, digest)."""
    own = start_real_node(tmp_path / "node")
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
