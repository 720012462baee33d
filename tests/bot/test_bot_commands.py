"""The commands that only read: help, find, balance, ledger, statement, dues."""

from __future__ import annotations

import csv
import io

from tests.bot.conftest import Chat, RealNode


async def test_start_tells_the_owner_everything_they_can_do(bot, owner: Chat) -> None:
    reply = await owner.send("/start")
    for command in ("/find", "/balance", "/pay", "/credit", "/redeem", "/ledger", "/dues"):
        assert command in reply.text
    assert "/statement" in reply.text and "/debit" in reply.text


async def test_help_for_staff_leaves_out_owner_commands(bot, staff: Chat) -> None:
    reply = await staff.send("/help")
    assert "/pay" in reply.text and "/credit" in reply.text and "/redeem" in reply.text
    assert "/debit" not in reply.text and "/statement" not in reply.text
    assert "/dues" not in reply.text


async def test_find_lists_matches_with_balance_and_points(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag} Lee", phone="+1 555 0100")
    node.add_customer(f"Bob {tag} Ray", email=f"bob.{tag}@example.com")
    node.charge(ann, 5000)
    node.sell(ann, 4500)  # cash: 45 points

    reply = await owner.send(f"/find {tag}")

    lines = reply.text.splitlines()
    assert len(lines) == 2
    assert f"Ann {tag} Lee · +15550100 · owes $50.00 · 45 points" in lines
    assert f"Bob {tag} Ray · bob.{tag}@example.com · owes nothing · 0 points" in lines

    await owner.tap(reply, f"Ann {tag} Lee · +15550100")  # a tap on a name: their balance
    assert "Owes $50.00" in (await owner.edited(reply)).text


async def test_find_by_phone_ignores_formatting(bot, owner: Chat, node: RealNode, tag: str) -> None:
    node.add_customer(f"Cy {tag}", phone="+44 20 7946 0958")
    reply = await owner.send("/find (20) 7946-0958")
    assert f"Cy {tag}" in reply.text


async def test_find_with_no_match_says_how_to_search(bot, owner: Chat, tag: str) -> None:
    reply = await owner.send(f"/find zz{tag}")
    assert f"No customer matches “zz{tag}”" in reply.text
    assert "phone" in reply.text and "email" in reply.text


async def test_find_without_query_explains_usage(bot, owner: Chat) -> None:
    reply = await owner.send("/find")
    assert "/find QUERY" in reply.text


async def test_balance_shows_what_is_owed_points_and_last_entries(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}", phone="+15550101")
    node.sell(ann, 12000, method="account")  # owes 120.00, earns 120 points
    node.api(
        "POST",
        f"/customers/{ann['id']}/ledger",
        {"type": "credit", "amount": 2000, "description": "Payment received"},
    )

    reply = await owner.send(f"/balance {tag}")

    assert "Owes $100.00" in reply.text
    assert "Points: 120 points (worth $12.00)" in reply.text
    assert "Payment received · paid $20.00 → owes $100.00" in reply.text
    assert "charged $120.00 → owes $120.00" in reply.text
    assert "-" not in reply.text.split("Owes")[1].split("\n")[0]  # words, not signs


async def test_balance_in_credit(bot, owner: Chat, node: RealNode, tag: str) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.api(
        "POST",
        f"/customers/{ann['id']}/ledger",
        {"type": "credit", "amount": 1200, "description": "Deposit"},
    )
    reply = await owner.send(f"/balance {tag}")
    assert "In credit $12.00" in reply.text


async def test_several_matches_ask_which_one_and_the_pick_answers(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Ann {tag} Lee", phone="+15550102")
    anna = node.add_customer(f"Anna {tag} Park", phone="+15550103")
    node.charge(anna, 700)

    chooser = await owner.send(f"/balance {tag}")

    assert "2 customers match" in chooser.text
    labels = owner.buttons(chooser)
    assert labels == [f"Ann {tag} Lee · +15550102", f"Anna {tag} Park · +15550103"]
    await owner.tap(chooser, labels[1])
    shown = await owner.edited(chooser)
    assert shown.text.startswith(f"Anna {tag} Park")
    assert "Owes $7.00" in shown.text


async def test_exact_name_needs_no_choice(bot, owner: Chat, node: RealNode, tag: str) -> None:
    node.add_customer(f"Ann {tag}")
    node.add_customer(f"Ann {tag} Marie")
    reply = await owner.send(f"/balance ann {tag}")
    assert reply.text.startswith(f"Ann {tag}\n")


async def test_ledger_lists_entries_with_running_balance(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 3000, note="Flour")
    node.charge(ann, 1550, note="Rice")
    node.api(
        "POST",
        f"/customers/{ann['id']}/ledger",
        {"type": "credit", "amount": 4550, "description": "Cash"},
    )

    reply = await owner.send(f"/ledger {tag}")

    lines = reply.text.splitlines()
    assert lines[0] == f"Ledger of Ann {tag} (now owes nothing), newest first:"
    assert lines[1].endswith("Cash · paid $45.50 → owes nothing")
    assert lines[2].endswith("Rice · charged $15.50 → owes $45.50")
    assert lines[3].endswith("Flour · charged $30.00 → owes $30.00")


async def test_ledger_of_new_customer(bot, owner: Chat, node: RealNode, tag: str) -> None:
    node.add_customer(f"Ann {tag}")
    reply = await owner.send(f"/ledger {tag}")
    assert reply.text == f"Ann {tag} has no ledger entries yet."


async def test_statement_sends_the_whole_ledger_as_csv(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag} Lee")
    for amount in range(101, 106):
        node.charge(ann, amount, note=f"Item {amount}")

    sent = await owner.send(f"/statement {tag}", expect="sendDocument")

    name, content = sent.files["document"]
    assert name.startswith(f"statement-ann-{tag}-lee-") and name.endswith(".csv")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0] == [
        "date",
        "type",
        "amount",
        "balance_after",
        "description",
        "reference_id",
        "entry_id",
    ]
    assert [r[2] for r in rows[1:]] == ["1.01", "1.02", "1.03", "1.04", "1.05"]
    assert rows[-1][3] == "-5.15" and rows[-1][4] == "Item 105"
    assert "5 entries" in sent.text


async def test_statement_after_choosing_the_customer(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Ann {tag}")
    bea = node.add_customer(f"Bea {tag}")
    node.charge(bea, 999)
    chooser = await owner.send(f"/statement {tag}")
    await owner.tap(chooser, f"Bea {tag}")
    sent = await owner.telegram.wait_for("sendDocument", start=len(owner.telegram.calls) - 2)
    assert sent.files["document"][1].decode("utf-8-sig").count("\n") == 2
    assert (await owner.edited(chooser)).text == f"Statement of Bea {tag} sent."


async def test_dues_lists_who_owes_most_and_for_how_long(
    empty_node: RealNode, telegram, owner: Chat
) -> None:
    from tests.bot.conftest import bot_settings, running_bot

    ann = empty_node.add_customer("Ann Lee")
    bob = empty_node.add_customer("Bob Ray")
    empty_node.charge(ann, 2500)
    empty_node.charge(bob, 9000)
    async for _ in running_bot(bot_settings(empty_node, telegram)):
        reply = await owner.send("/dues")

    lines = reply.text.splitlines()
    assert lines[0] == "Who owes most (total owed $115.00):"
    assert lines[1] == "1. Bob Ray owes $90.00 today"
    assert lines[2] == "2. Ann Lee owes $25.00 today"
    assert "0-30 days $115.00" in reply.text


async def test_unknown_command_points_to_help(bot, owner: Chat) -> None:
    reply = await owner.send("/frobnicate")
    assert "/help" in reply.text
