"""The bot as users start it: inside `shopnode serve`, or alone as `shopnode bot`."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import node.cli
from tests.bot.conftest import OWNER, STAFF, TOKEN, Chat, RealNode, free_port

CLI_SOURCE = inspect.getsource(node.cli)
serve_wired = pytest.mark.skipif(
    "bot_running" not in CLI_SOURCE, reason="shopnode serve does not start the bot yet"
)
bot_wired = pytest.mark.skipif(
    "run_bot_forever" not in CLI_SOURCE, reason="shopnode bot does not exist yet"
)


async def run_cli(real: RealNode, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    # A fixed port: the in-process bot is told the node's URL before the node listens.
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", *args,
        cwd=real.data_dir, env={**real.env(free_port()), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, as a service manager stops it; the output, after a clean exit."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    return output.decode()


@serve_wired
async def test_serve_runs_the_bot_in_its_own_loop(telegram, owner: Chat, tmp_path: Path) -> None:
    real = RealNode(tmp_path / "node")
    real.data_dir.mkdir(parents=True)
    process = await run_cli(real, serve_bot_env(telegram.url), "serve")
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
    process = await run_cli(real, serve_bot_env(telegram.url), "serve")
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
    process = await run_cli(alone, bot_env, "bot")
    try:
        reply = await asyncio.wait_for(owner.send(f"/find {tag}"), 20)
    finally:
        output = await stop(process)
    assert reply.text.startswith(f"Ann {tag} · owes nothing")
    assert TOKEN not in output and node.owner_token not in output
