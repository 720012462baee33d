"""Money and points from the chat: confirm, cancel, and never twice."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot.conftest import Chat, RealNode, bot_settings, running_bot


def payments(node: RealNode, customer: dict) -> list[dict]:
    return [e for e in node.ledger(customer) if e["type"] == "credit"]


async def test_pay_asks_to_confirm_then_records_and_shows_new_balance(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 7000)

    shown = await owner.send(f"/pay {tag} 50 cash at the door")

    assert shown.text == (
        f"Record a payment of $50.00 from Ann {tag}?\nNote: cash at the door\n"
        f"Ann {tag} owes $70.00 now; after this: owes $20.00."
    )
    assert owner.buttons(shown) == ["Confirm", "Cancel"]
    assert payments(node, ann) == []  # nothing before the tap

    answer = await owner.tap(shown, "Confirm")
    result = await owner.edited(shown)

    assert answer.params.get("text") == "Recorded."
    assert (
        result.text
        == f"✅ Recorded a payment of $50.00 from Ann {tag}.\nAnn {tag} now owes $20.00."
    )
    assert owner.buttons(shown) == []
    [entry] = payments(node, ann)
    assert (entry["amount"], entry["description"]) == (5000, "Payment received: cash at the door")
    assert node.customer(ann)["ledger_balance"] == -2000


@pytest.mark.parametrize(
    ("typed", "minor", "shown"),
    [("50", 5000, "$50.00"), ("50.5", 5050, "$50.50"), ("50.25", 5025, "$50.25")],
)
async def test_amounts_are_read_exactly(
    bot, owner: Chat, node: RealNode, tag: str, typed: str, minor: int, shown: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    question = await owner.send(f"/pay {tag} {typed}")
    assert f"payment of {shown} from" in question.text
    await owner.tap(question, "Confirm")
    await owner.edited(question)
    assert [e["amount"] for e in payments(node, ann)] == [minor]


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("/pay {tag}", "Which customer and how much? Use /pay QUERY AMOUNT"),
        ("/pay {tag} lots", "Which customer and how much?"),
        ("/pay {tag} 50.123", "USD amounts have at most 2 decimals. Use /pay"),
        ("/pay {tag} 0", "The amount must be more than zero."),
        ("/pay {tag} -5", "'-5' is not an amount; write it like 50 or 50.25."),
        ("/pay {tag} 5,0,0", "'5,0,0' is not an amount"),
        ("/credit {tag} 99999999999999", "That amount is too large."),
        ("/redeem {tag} 1.5", "'1.5' is not a number of points; write it like 100."),
        ("/redeem {tag} 0", "The number of points must be more than zero."),
    ],
)
async def test_bad_amounts_get_a_clear_reply_and_record_nothing(
    bot, owner: Chat, node: RealNode, tag: str, typed: str, says: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    reply = await owner.send(typed.format(tag=tag))
    assert says in reply.text
    assert owner.buttons(reply) == []
    assert node.ledger(ann) == []


async def test_cancel_records_nothing_and_a_late_confirm_is_refused(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    shown = await owner.send(f"/pay {tag} 10")
    confirm = owner.data_of(shown, "Confirm")

    await owner.tap(shown, "Cancel")
    assert (await owner.edited(shown)).text == "Cancelled. Nothing was recorded."
    late = await owner.tap_data(shown.result, confirm, stale=True)

    assert "cancelled" in late.params["text"]
    assert node.ledger(ann) == []


async def test_double_tap_records_one_payment(bot, owner: Chat, node: RealNode, tag: str) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 3000)
    shown = await owner.send(f"/pay {tag} 30")
    confirm = owner.data_of(shown, "Confirm")

    # Both taps leave the phone before the bot has answered either.
    first = await owner.telegram.tap(owner.user_id, shown.result, confirm)
    second = await owner.telegram.tap(owner.user_id, shown.result, confirm)
    answers = await asyncio.gather(owner.answer_to(first), owner.answer_to(second))

    assert [a.params.get("text") for a in answers] == ["Recorded.", "Recorded."]
    assert [e["amount"] for e in payments(node, ann)] == [3000]
    assert node.customer(ann)["ledger_balance"] == 0
    assert (await owner.edited(shown)).text.endswith(f"Ann {tag} now owes nothing.")


async def test_a_tap_redelivered_after_a_restart_records_once(
    node: RealNode, telegram, owner: Chat, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    settings = bot_settings(node, telegram)
    async for _ in running_bot(settings):
        shown = await owner.send(f"/pay {tag} 12.50")
        await owner.tap(shown, "Confirm")
        await owner.edited(shown)
    tap = owner.last_tap

    # The bot crashed before Telegram learnt the tap was handled: it comes again.
    async for _ in running_bot(settings):
        owner._tapped_at = len(telegram.calls)
        await telegram.redeliver(tap)
        answer = await owner.answer_to(tap)

    assert answer.params.get("text") == "Recorded."
    assert [e["amount"] for e in payments(node, ann)] == [1250]


async def test_cancel_after_confirm_does_not_pretend_nothing_was_recorded(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    shown = await owner.send(f"/pay {tag} 5")
    cancel = owner.data_of(shown, "Cancel")
    await owner.tap(shown, "Confirm")
    result = await owner.edited(shown)

    late = await owner.tap_data(shown.result, cancel, stale=True)

    assert "already recorded" in late.params["text"]
    assert (
        owner.telegram.messages[(owner.user_id, shown.result["message_id"])]["text"] == result.text
    )
    assert len(payments(node, ann)) == 1


async def test_pay_after_choosing_among_namesakes_keeps_the_note(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Ann {tag} Lee", phone="+15550111")
    anna = node.add_customer(f"Anna {tag} Park", phone="+15550112")
    chooser = await owner.send(f"/pay {tag} 30 paid by card")

    await owner.tap(chooser, f"Anna {tag} Park · +15550112")
    question = await owner.edited(chooser)
    assert question.text.startswith(f"Record a payment of $30.00 from Anna {tag} Park?")
    assert "Note: paid by card" in question.text
    await owner.tap(chooser, "Confirm")
    await owner.edited(chooser)

    [entry] = payments(node, anna)
    assert (entry["amount"], entry["description"]) == (3000, "Payment received: paid by card")


async def test_pay_with_no_matching_customer(bot, owner: Chat, tag: str) -> None:
    reply = await owner.send(f"/pay zz{tag} 10")
    assert reply.text.startswith(f"No customer matches “zz{tag}”")


async def test_credit_records_a_purchase_on_account(
    bot, staff: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}", phone="+15550120")
    shown = await staff.send("/credit 5550120 25.40")
    assert shown.text.startswith(f"Record a purchase on account of $25.40 for Ann {tag}?")
    assert "after this: owes $25.40" in shown.text

    await staff.tap(shown, "Confirm")
    result = await staff.edited(shown)

    [sale_debit] = node.ledger(ann)
    assert sale_debit["type"] == "debit" and sale_debit["amount"] == 2540
    receipt = sale_debit["description"].removeprefix("Sale ")
    assert result.text == (
        f"✅ Recorded a purchase on account of $25.40 for Ann {tag} (receipt {receipt}).\n"
        f"Ann {tag} now owes $25.40 and earned 25 points."
    )


async def test_credit_over_the_limit_is_refused_politely(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.api("PATCH", f"/customers/{ann['id']}", {"credit_limit": 1000})
    shown = await owner.send(f"/credit {tag} 25")

    await owner.tap(shown, "Confirm")
    result = await owner.edited(shown)

    assert result.text.startswith("❌ Not recorded.")
    assert "credit limit" in result.text and "Traceback" not in result.text
    assert node.ledger(ann) == []


async def test_redeem_shows_the_discount_and_confirms(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.sell(ann, 10000)  # 100 points
    shown = await owner.send(f"/redeem {tag} 40")
    assert shown.text == (
        f"Redeem 40 points for Ann {tag}? That is a $4.00 discount.\n"
        f"Ann {tag} has 100 points; after this: 60."
    )

    await owner.tap(shown, "Confirm")
    result = await owner.edited(shown)

    assert (
        result.text
        == f"✅ Redeemed 40 points for Ann {tag}: give a $4.00 discount.\nPoints left: 60."
    )
    assert node.customer(ann)["loyalty_points"] == 60


async def test_redeem_more_points_than_held_asks_nothing(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.sell(ann, 1000)  # 10 points
    reply = await owner.send(f"/redeem {tag} 500")
    assert reply.text == f"Ann {tag} has only 10 points."
    assert owner.buttons(reply) == []
    assert node.customer(ann)["loyalty_points"] == 10


async def test_owner_posts_a_manual_debit(bot, owner: Chat, node: RealNode, tag: str) -> None:
    ann = node.add_customer(f"Ann {tag}")
    shown = await owner.send(f"/debit {tag} 120 opening balance")
    assert shown.text.startswith(f"Post a manual debit of $120.00 to Ann {tag}?")
    await owner.tap(shown, "Confirm")
    assert (await owner.edited(shown)).text.endswith(f"Ann {tag} now owes $120.00.")
    [entry] = node.ledger(ann)
    assert (entry["type"], entry["description"]) == ("debit", "Manual debit: opening balance")


async def test_amounts_follow_the_shop_currency(
    empty_node: RealNode, telegram, owner: Chat
) -> None:
    empty_node.api("PATCH", "/settings", {"currency": "JPY"})
    ann = empty_node.add_customer("Ann Lee")
    async for _ in running_bot(bot_settings(empty_node, telegram)):
        refused = await owner.send("/pay ann 50.5")
        shown = await owner.send("/pay ann 1500")
        await owner.tap(shown, "Confirm")
        result = await owner.edited(shown)

    assert "JPY amounts have no decimals" in refused.text
    assert shown.text.startswith("Record a payment of ¥1,500 from Ann Lee?")
    assert result.text.endswith("Ann Lee now in credit ¥1,500.")
    assert [e["amount"] for e in empty_node.ledger(ann)] == [1500]


async def test_amounts_read_and_show_the_decimals_the_node_reports(
    empty_node: RealNode, telegram, owner: Chat
) -> None:
    """KWD has 3 decimals and no symbol in the bot: everything it shows or reads is in
    the node's minor units, as GET /settings reports them."""
    settings = empty_node.api("PATCH", "/settings", {"currency": "KWD"})
    assert (settings["currency"], settings["currency_decimals"]) == ("KWD", 3)
    ann = empty_node.add_customer("Ann Lee")
    empty_node.charge(ann, 12_345_678)
    async for _ in running_bot(bot_settings(empty_node, telegram)):
        refused = await owner.send("/pay ann 1.2345")
        shown = await owner.send("/pay ann 1.5")
        await owner.tap(shown, "Confirm")
        result = await owner.edited(shown)
        balance = await owner.send("/balance ann")
        dues = await owner.send("/dues")
        statement = await owner.send("/statement ann", expect="sendDocument")

    assert "KWD amounts have at most 3 decimals" in refused.text
    assert shown.text.startswith("Record a payment of KWD 1.500 from Ann Lee?")
    assert result.text.endswith("Ann Lee now owes KWD 12,344.178.")
    assert "Payment received · paid KWD 1.500 → owes KWD 12,344.178" in balance.text
    assert dues.text.startswith("Who owes most (total owed KWD 12,344.178):")
    rows = statement.files["document"][1].decode("utf-8-sig").splitlines()
    assert [row.split(",")[2:4] for row in rows[1:]] == [["12345.678", "-12345.678"],
                                                         ["1.500", "-12344.178"]]  # fmt: skip
    assert [e["amount"] for e in empty_node.ledger(ann)] == [1500, 12_345_678]
