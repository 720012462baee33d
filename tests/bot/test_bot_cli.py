"""The bot as users start it: inside `shopnode serve`, or alone as `shopnode bot`."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import node.cli
from tests.bot.conftest import OWNER, STAFF, TOKEN, Chat, RealNode
from tests.processes import Server, free_port, start_bot, start_node

CLI_SOURCE = inspect.getsource(node.cli)
serve_wired = pytest.mark.skipif(
    "bot_running" not in CLI_SOURCE, reason="shopnode serve does not start the bot yet"
)
bot_wired = pytest.mark.skipif(
    "run_bot_forever" not in CLI_SOURCE, reason="shopnode bot does not exist yet"
)


async def serve(real: RealNode, env: dict[str, str]) -> Server:
    """`shopnode serve` with `env`, once it listens. A fixed port: the in-process bot is told
    the node's URL before the node listens. In a thread, so the fake Bot API, in this test's
    event loop, answers meanwhile."""
    env = {**real.env(free_port()), **env}
    return await asyncio.to_thread(start_node, env, real.log, cwd=real.data_dir)


def bot_alone(real: RealNode, env: dict[str, str]) -> Server:
    """`shopnode bot` in `real`'s directory (it listens on nothing: a test waits for its
    first answer)."""
    return start_bot({**real.env(free_port()), **env}, real.log, cwd=real.data_dir)


async def stop(process: Server) -> str:
    """SIGTERM, as a service manager stops it; the output, after a clean exit."""
    code = await asyncio.to_thread(process.stop, timeout=20)
    output = process.output()
    assert code == 0, output
    return output


@serve_wired
async def test_serve_runs_the_bot_in_its_own_loop(telegram, owner: Chat, tmp_path: Path) -> None:
    real = RealNode(tmp_path / "node")
    real.data_dir.mkdir(parents=True)
    process = await serve(real, serve_bot_env(telegram.url))
    try:
        reply = await asyncio.wait_for(owner.send("/find nobody-here"), 20)
    finally:
        output = await stop(process)
    assert reply.text.startswith("No customer matches")  # the bot reached its node
    assert TOKEN not in output


def serve_bot_env(api_url: str) -> dict[str, str]:
    """`serve` with the bot on, against the fake Bot API, with one owner and one staff."""
    return {
        "SHOPNODE_BOT_TOKEN": TOKEN,
        "SHOPNODE_BOT_API_URL": api_url,
        "SHOPNODE_BOT_OWNERS": str(OWNER),
        "SHOPNODE_BOT_STAFF": str(STAFF),
    }


def token_rows(real: RealNode) -> dict[str, list[tuple[str, str]]]:
    """`shopnode token list` as {name: [(role, status), ...]} (status: active or revoked)."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in real.cli("token", "list").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.setdefault(parts[0], []).append((parts[1], parts[3]))
    return rows


@serve_wired
async def test_serve_gives_the_bot_an_owner_and_a_staff_token_and_revokes_both(
    telegram, owner: Chat, staff: Chat, tmp_path: Path
) -> None:
    real = RealNode(tmp_path / "node")
    real.data_dir.mkdir(parents=True)
    real.owner_token = real.create_token("setup", "owner")
    process = await serve(real, serve_bot_env(telegram.url))
    try:
        # Staff are served (with the staff token), and the node keeps its staff rules.
        found = await asyncio.wait_for(staff.send("/find nobody-here"), 20)
        assert found.text.startswith("No customer matches")
        assert (await owner.send("/find nobody-here")).text.startswith("No customer matches")
        during = await asyncio.to_thread(token_rows, real)
    finally:
        output = await stop(process)
    after = token_rows(real)
    assert during["telegram-bot"] == [("owner", "active")]
    assert during["telegram-bot-staff"] == [("staff", "active")]
    assert after["telegram-bot"] == [("owner", "revoked")]
    assert after["telegram-bot-staff"] == [("staff", "revoked")]
    assert TOKEN not in output


@bot_wired
async def test_bot_alone_talks_to_a_node_over_http(
    node: RealNode, telegram, owner: Chat, tag: str, tmp_path: Path
) -> None:
    node.add_customer(f"Ann {tag}")
    alone = RealNode(tmp_path / "bot")  # its own working dir: no shop data there
    alone.data_dir.mkdir(parents=True)
    bot_env = {
        "SHOPNODE_BOT_TOKEN": TOKEN,
        "SHOPNODE_BOT_API_URL": telegram.url,
        "SHOPNODE_BOT_OWNERS": str(OWNER),
        "SHOPNODE_BOT_NODE_URL": node.url,
        "SHOPNODE_BOT_NODE_TOKEN": node.owner_token,
    }
    process = bot_alone(alone, bot_env)
    try:
        reply = await asyncio.wait_for(owner.send(f"/find {tag}"), 20)
    finally:
        output = await stop(process)
    assert reply.text.startswith(f"Ann {tag} · owes nothing")
    assert TOKEN not in output and node.owner_token not in output
