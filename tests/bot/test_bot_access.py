"""Who learns what: owners everything, staff the counter, strangers nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.actions import DEBIT, PAY, Action
from tests.bot.conftest import OWNER, STRANGER, TOKEN, Chat, RealNode


async def quiet_for(chat: Chat, seconds: float = 0.3) -> list:
    """Calls the bot makes to this chat in the next moment (expected: none)."""
    start = len(chat.telegram.calls)
    await asyncio.sleep(seconds)
    return [
        c for c in chat.telegram.calls[start:] if int(c.params.get("chat_id", 0)) == chat.user_id
    ]


@pytest.mark.parametrize("command", ["/start", "/balance {tag}", "/find {tag}", "/dues"])
async def test_a_stranger_gets_one_short_refusal_and_no_data(
    bot, stranger: Chat, node: RealNode, tag: str, command: str
) -> None:
    ann = node.add_customer(f"Ann {tag}", phone="+15550300")
    node.charge(ann, 4200)

    reply = await stranger.send(command.format(tag=tag))

    assert reply.text.startswith("Sorry, this is a private shop bot.")
    assert str(STRANGER) in reply.text  # their own id, so the owner can add them
    for secret in (tag, "5550300", "42.00", "Ann"):
        assert secret not in reply.text
    assert reply.buttons() == []
    assert await quiet_for(stranger) == []


async def test_a_strangers_tap_records_nothing(
    bot, stranger: Chat, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    shown = await owner.send(f"/pay {tag} 10")

    answer = await stranger.tap_data(shown.result, Action(PAY, ann["id"], 1000).data("ok"))

    assert answer.params["text"] == "Sorry, this is a private shop bot."
    assert node.ledger(ann) == []


async def test_staff_cannot_post_manual_debits(bot, staff: Chat, node: RealNode, tag: str) -> None:
    ann = node.add_customer(f"Ann {tag}")
    reply = await staff.send(f"/debit {tag} 100")
    assert reply.text == "Only the shop owner can do that."

    # Nor by tapping a debit confirmation they got hold of.
    answer = await staff.tap_data(reply.result, Action(DEBIT, ann["id"], 10000).data("ok"))
    assert answer.params["text"] == "Only the shop owner can do that."
    assert node.ledger(ann) == []


@pytest.mark.parametrize("command", ["/statement {tag}", "/dues"])
async def test_staff_cannot_export_or_list_all_debtors(
    bot, staff: Chat, node: RealNode, tag: str, command: str
) -> None:
    node.add_customer(f"Ann {tag}")
    reply = await staff.send(command.format(tag=tag))
    assert reply.text == "Only the shop owner can do that."
    assert staff.telegram.calls_of("sendDocument") == []


async def test_staff_takes_payments(bot, staff: Chat, node: RealNode, tag: str) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 1500)
    shown = await staff.send(f"/pay {tag} 15")
    await staff.tap(shown, "Confirm")
    assert (await staff.edited(shown)).text.endswith("now owes nothing.")


async def test_group_chats_get_no_data(bot, owner: Chat, node: RealNode, tag: str) -> None:
    node.add_customer(f"Ann {tag}")
    start = len(owner.telegram.calls)
    await owner.telegram.send(OWNER, f"/balance {tag}", chat_type="group")
    reply = await owner.telegram.wait_for("sendMessage", start=start)
    assert reply.text == "I only work in a private chat with you."


async def test_logs_hold_no_token_and_no_personal_data(
    node: RealNode, telegram, owner: Chat, stranger: Chat, tag: str, caplog
) -> None:
    from tests.bot.conftest import bot_settings, running_bot

    caplog.set_level(logging.DEBUG)
    ann = node.add_customer(f"Ann {tag}", phone="+15550399", email=f"ann.{tag}@example.com")
    async for _ in running_bot(bot_settings(node, telegram)):
        await owner.send(f"/find {tag}")
        shown = await owner.send(f"/pay {tag} 7 secret note {tag}")
        await owner.tap(shown, "Confirm")
        await owner.edited(shown)
        await stranger.send("/start")
    assert len(node.ledger(ann)) == 1

    logged = caplog.text
    assert logged  # the bot did log something (start, stop), just nothing private
    for secret in (TOKEN, TOKEN.split(":")[1], node.owner_token, tag, "5550399", str(STRANGER)):
        assert secret not in logged
