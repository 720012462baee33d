"""When things break: the node down, Telegram unreachable, a rejected token, a stop signal."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from bot import BotSettings, TokenRejected, bot_running, run_bot_forever
from tests.bot.conftest import OWNER, TOKEN, Chat, RealNode, bot_settings, running_bot, wait_state
from tests.bot.fake_telegram import FakeBotAPI
from tests.processes import free_port, spawn_python, stop

UNREACHABLE = "I can't reach the shop node right now. Please try again in a moment."


@pytest.mark.parametrize("command", ["/find ann", "/balance ann", "/pay ann 50", "/dues"])
async def test_node_down_gets_a_friendly_sentence(
    node: RealNode, telegram: FakeBotAPI, owner: Chat, command: str
) -> None:
    settings = bot_settings(node, telegram, node_url=f"http://127.0.0.1:{free_port()}")
    async for _ in running_bot(settings):
        reply = await owner.send(command)
    assert reply.text == UNREACHABLE


async def test_confirm_while_node_down_keeps_the_buttons_and_records_once_later(
    empty_node: RealNode, telegram: FakeBotAPI, owner: Chat
) -> None:
    ann = empty_node.add_customer("Ann Lee")
    async for _ in running_bot(bot_settings(empty_node, telegram)):
        shown = await owner.send("/pay ann 20")
        empty_node.stop()

        answer = await owner.tap(shown, "Confirm")
        assert answer.params["text"].startswith(UNREACHABLE)
        assert "tap Confirm again" in answer.params["text"]
        assert answer.params["show_alert"] in (True, "true")
        assert owner.buttons(shown) == ["Confirm", "Cancel"]

        empty_node.serve(empty_node.port)
        await owner.tap(shown, "Confirm")
        result = await owner.edited(shown)
    assert result.text.startswith("✅ Recorded a payment of $20.00 from Ann Lee.")
    assert [e["amount"] for e in empty_node.ledger(ann)] == [2000]


async def test_telegram_unreachable_does_not_hold_up_the_node(
    node: RealNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = bot_settings(node, FakeBotAPI(TOKEN), api_url=f"http://127.0.0.1:{free_port()}")
    began = time.monotonic()
    async with bot_running(settings) as runner:
        await wait_state(runner, "offline")
    assert time.monotonic() - began < 5
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("bot")]
    assert warnings == ["Telegram is unreachable (NetworkError); the bot keeps retrying"]
    assert "Traceback" not in caplog.text


async def test_the_bot_connects_once_telegram_is_back(
    node: RealNode, telegram: FakeBotAPI, owner: Chat
) -> None:
    telegram.offline = True
    async with bot_running(bot_settings(node, telegram)) as runner:
        await wait_state(runner, "offline")
        telegram.offline = False
        await runner.wait_running(5)
        reply = await owner.send("/help")
    assert "/pay" in reply.text


async def test_a_rejected_token_stops_bot_alone_without_printing_it(
    node: RealNode, telegram: FakeBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "999:wrong-token-also-secret"
    settings = bot_settings(node, telegram, token=wrong)
    with pytest.raises(TokenRejected) as raised:
        await asyncio.wait_for(run_bot_forever(settings), 5)
    assert wrong not in str(raised.value) and "wrong-token" not in caplog.text


async def test_a_rejected_token_leaves_the_node_serving(
    node: RealNode, telegram: FakeBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bot_settings(node, telegram, token="999:wrong-token-also-secret")
    async with bot_running(settings) as runner:
        await wait_state(runner, "failed")
    assert "Telegram rejected the bot token" in caplog.text
    assert "wrong-token" not in caplog.text


async def test_bot_alone_stops_cleanly_on_sigterm(
    node: RealNode, telegram: FakeBotAPI, owner: Chat, tmp_path: Path
) -> None:
    settings = bot_settings(node, telegram)
    script = (
        "import asyncio, sys\n"
        "from bot import BotSettings, run_bot_forever\n"
        f"s = BotSettings(token={settings.token!r}, node_url={settings.node_url!r},"
        f" node_token={settings.node_token!r}, owners={{{OWNER}}}, api_url={settings.api_url!r})\n"
        "asyncio.run(run_bot_forever(s))\n"
        "print('clean exit')\n"
    )
    log = tmp_path / "bot.log"
    process = spawn_python(script, env={}, log=log)
    try:
        reply = await asyncio.wait_for(owner.send("/help"), 15)
        assert "/pay" in reply.text
    finally:
        code = await asyncio.to_thread(stop, process, timeout=15)  # SIGTERM, then SIGKILL
    output = log.read_text()
    assert code == 0
    assert "clean exit" in output
    assert TOKEN not in output


async def test_settings_never_show_secrets() -> None:
    settings = BotSettings(token=TOKEN, node_url="http://n", node_token="sn_secret", owners={1})
    assert TOKEN not in repr(settings) and "sn_secret" not in repr(settings)
