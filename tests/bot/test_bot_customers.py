"""Customers on Telegram, driven for real: the owner's /invite, the customer's QR link and
confirmation, receipts from the events feed, reminders, unlinking and erasure."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot import BotRunner, invites
from bot.actions import BALANCE, CONFIRM, PAY, PICK, Action
from tests.bot.conftest import OWNER, Chat, RealNode, bot_settings, running_bot
from tests.bot.fake_telegram import Call, FakeBotAPI

SECOND_OWNER = 1002
# Customers' Telegram ids: new in every test, as the node is shared by the bot tests.
_customer_ids = itertools.count(5_000_001)
LINK = re.compile(r"https://t\.me/shop_test_bot\?start=([A-Za-z0-9_-]+)")
INVALID = "This link is not valid. Please ask the shop for a new one."


def settings(node: RealNode, telegram: FakeBotAPI) -> Any:
    """Receipts looked for every 0.2 s, two owners, anyone owing is overdue."""
    return bot_settings(node, telegram, receipts_every_seconds=0.2, remind_after_days=0,
                        owners={OWNER, SECOND_OWNER})  # fmt: skip


@pytest.fixture
async def shop_bot(node: RealNode, telegram: FakeBotAPI) -> AsyncIterator[BotRunner]:
    async for runner in running_bot(settings(node, telegram)):
        yield runner


@pytest.fixture
def customer(telegram: FakeBotAPI) -> Chat:
    return Chat(telegram, next(_customer_ids))


def messages_to(chat: Chat, start: int = 0) -> list[Call]:
    """What the bot sent or edited in this chat since call `start`."""
    return [c for c in chat.telegram.calls[start:]
            if int(c.params.get("chat_id", 0)) == chat.user_id]  # fmt: skip


async def settle(seconds: float = 1.0) -> None:
    """Give the bot several receipt rounds."""
    await asyncio.sleep(seconds)


async def invite(owner: Chat, name: str) -> tuple[str, Call]:
    """The owner's /invite: the QR code photo; returns the code and the photo call."""
    photo = await owner.send(f"/invite {name}", expect="sendPhoto")
    return LINK.search(photo.text).group(1), photo


async def link(owner: Chat, customer: Chat, name: str) -> Call:
    """Invite, open the link, confirm: the bot's edit saying the account is linked."""
    code, _ = await invite(owner, name)
    asked = await customer.send(f"/start {code}")
    assert (await customer.tap(asked, "Yes, link it")).params["text"] == "Linked."
    return await customer.edited(asked)


async def test_invite_qr_start_confirm_linked(
    shop_bot, owner: Chat, customer: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}", phone="+1 555 0142")
    node.charge(ann, 4200)

    code, photo = await invite(owner, f"Ann {tag}")
    link_text = f"https://t.me/shop_test_bot?start={code}"
    assert f"Telegram link for Ann {tag}: {link_text}" in photo.text
    png = next(iter(photo.files.values()))[1]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == invites.qr_png(link_text)

    asked = await customer.send(f"/start {code}")
    assert "your account at My Shop (the phone number on file ends in 42)?" in asked.text
    assert customer.buttons(asked) == ["Yes, link it", "No"]
    await customer.tap(asked, "Yes, link it")
    linked = await customer.edited(asked)
    assert linked.text.startswith("✅ Linked. Your account at My Shop:")
    assert "/balance" in linked.text and "(now on)" in linked.text

    balance = await customer.send("/balance")
    assert f"Ann {tag}" in balance.text and "Owes $42.00." in balance.text
    statement = await customer.send("/statement", expect="sendDocument")
    assert statement.text == "Your statement: 1 entries."

    # Inviting a linked customer says so and offers a new link.
    again = await owner.send(f"/invite Ann {tag}")
    assert f"Ann {tag} has already linked their Telegram" in again.text
    start = len(owner.telegram.calls)
    await owner.tap(again, "Make a new link")
    photo = await owner.telegram.wait_for("sendPhoto", start=start)
    assert LINK.search(photo.text).group(1) != code


async def test_strangers_with_a_made_up_used_or_mangled_code_learn_nothing(
    shop_bot, owner: Chat, customer: Chat, stranger: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Bea {tag}", phone="+1 555 0177")
    code, _ = await invite(owner, f"Bea {tag}")
    asked = await customer.send(f"/start {code}")
    await customer.tap(asked, "Yes, link it")
    await customer.edited(asked)

    answers = [(await stranger.send(f"/start {attempt}")).text
               for attempt in (code, "A" * 22, code[:-1] + "x", "x", code + "/../1")]  # fmt: skip
    assert answers == [INVALID] * 5
    # A forged confirmation tap with the used code links nothing either.
    shown = await stranger.send("/start " + "B" * 22)
    await stranger.tap_data(shown.result, f"lk|{code}")
    assert (await stranger.edited(shown)).text == INVALID
    assert (await stranger.send("/balance")).text.startswith("Sorry, this is a private shop bot.")
    for call in messages_to(stranger):
        assert f"Bea {tag}" not in call.text and "77" not in call.text


async def test_a_linked_customer_reaches_nobody_elses_data(
    shop_bot, owner: Chat, customer: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Cal {tag}")
    bob = node.add_customer(f"Bob {tag} Other", phone="+1 555 0199")
    node.charge(bob, 9900)
    await link(owner, customer, f"Cal {tag}")
    start = len(customer.telegram.calls)

    for text in (f"/balance Bob {tag}", f"/find Bob {tag}", f"/ledger Bob {tag}",
                 f"/pay Bob {tag} 5", f"/statement Bob {tag}", "/dues", f"/invite Bob {tag}",
                 "/remind overdue"):  # fmt: skip
        await customer.send(text, expect="sendMessage" if "statement" not in text
                            else "sendDocument")  # fmt: skip
    shown = await customer.send("/help")
    for data in (Action(BALANCE, bob["id"]).data(PICK), Action(PAY, bob["id"], 100).data(CONFIRM),
                 "no", "lk|x"):  # fmt: skip
        answer = await customer.tap_data(shown.result, data)
        assert "expired" in answer.params["text"]
    # A made-up code on the link button: they are linked already, and it links nothing.
    answer = await customer.tap_data(shown.result, "lk|no-such-code-at-all-here")
    assert answer.params["text"] == "Already linked."
    await settle(0.3)
    for call in messages_to(customer, start):
        for secret in ("Bob", "99.00", "0199"):
            assert secret not in call.text, (call.method, call.text)
    assert node.customer(bob)["ledger_balance"] == -9900


async def test_a_sale_through_the_api_gives_exactly_one_receipt_also_across_restarts(
    node: RealNode, telegram: FakeBotAPI, owner: Chat, customer: Chat, tag: str
) -> None:
    dee = node.add_customer(f"Dee {tag}")
    node.sell(dee, 1500, "account")  # before the link: never a receipt
    async with running_bot_once(node, telegram):
        await link(owner, customer, f"Dee {tag}")
        node.sell(dee, 2500, "account")
        first = await telegram.wait_for("sendMessage", lambda c: "purchase of $25.00" in c.text
                                        and int(c.params["chat_id"]) == customer.user_id)
        assert first.text.startswith("My Shop: purchase of $25.00 (REC-")
        assert "you now owe $40.00 · 40 points" in first.text
        await settle()
    node.api("POST", f"/customers/{dee['id']}/ledger",
             {"type": "credit", "amount": 1000, "description": "Payment received"})
    async with running_bot_once(node, telegram):  # the payment was made while it was down
        await telegram.wait_for("sendMessage", lambda c: "payment received $10.00" in c.text,
                                timeout=10)  # fmt: skip
        await settle()
    async with running_bot_once(node, telegram):
        await settle()
    receipts = [c.text for c in messages_to(customer) if c.text.startswith("My Shop:")]
    assert len(receipts) == 2, receipts
    assert "payment received $10.00 — you now owe $30.00" in receipts[1]


def running_bot_once(node: RealNode, telegram: FakeBotAPI) -> Any:
    """The bot for the length of a block (a restart is leaving one and entering another)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run() -> AsyncIterator[BotRunner]:
        async for runner in running_bot(settings(node, telegram)):
            yield runner

    return run()


async def test_receipts_off_and_stop(
    shop_bot, owner: Chat, customer: Chat, node: RealNode, tag: str
) -> None:
    eve = node.add_customer(f"Eve {tag}")
    await link(owner, customer, f"Eve {tag}")
    assert (await customer.send("/receipts off")).text == "Receipts are off."
    node.sell(eve, 1000)
    start = len(customer.telegram.calls)
    await settle()
    assert messages_to(customer, start) == []
    assert (await customer.send("/stop")).text.startswith("Unlinked")
    assert (await customer.send("/balance")).text.startswith("Sorry, this is a private shop bot.")


async def test_two_owners_reminding_at_once_send_one_reminder(
    shop_bot, owner: Chat, customer: Chat, telegram: FakeBotAPI, node: RealNode, tag: str
) -> None:
    fay = node.add_customer(f"Fay {tag}")
    await link(owner, customer, f"Fay {tag}")
    node.sell(fay, 12000, "account")
    await settle(0.5)
    second = Chat(telegram, SECOND_OWNER)
    start = len(telegram.calls)

    answers = await asyncio.gather(owner.send(f"/remind Fay {tag}"),
                                   second.send(f"/remind Fay {tag}"))  # fmt: skip

    texts = sorted(a.text for a in answers)
    assert texts[0] == "No reminder sent: This customer was reminded less than 3 days ago."
    assert texts[1] == f"Reminder sent to Fay {tag}."
    reminders = [c.text for c in messages_to(customer, start) if "reminder" in c.text]
    assert reminders == ["Hello from My Shop. A friendly reminder: your balance is $120.00. "
                         "Please settle it when it suits you — thank you! Send /balance to "
                         "see your account."]  # fmt: skip
    report = await owner.send("/remind overdue")
    assert "skipped (reminded in the last 3 days)" in report.text
    node.add_customer(f"Gil {tag}")
    assert (await owner.send(f"/remind Gil {tag}")).text == (
        f"Gil {tag} has not linked their Telegram yet; /invite them first.")  # fmt: skip


async def test_anonymizing_the_customer_removes_the_link_and_stops_messages(
    shop_bot, owner: Chat, customer: Chat, node: RealNode, tag: str
) -> None:
    hal = node.add_customer(f"Hal {tag}")
    await link(owner, customer, f"Hal {tag}")
    node.sell(hal, 3000, "account")
    node.api("POST", f"/customers/{hal['id']}/ledger",
             {"type": "credit", "amount": 3000, "description": "Settled"})  # fmt: skip
    await customer.telegram.wait_for("sendMessage", lambda c: "payment received $30.00" in c.text)
    node.api("DELETE", f"/customers/{hal['id']}")  # history: anonymized
    start = len(customer.telegram.calls)
    refusal = await customer.send("/balance")
    assert refusal.text.startswith("Sorry, this is a private shop bot.")
    await settle()
    assert [c.text for c in messages_to(customer, start)] == [refusal.text]
