"""Hostile input through the bot: broken Unicode, spreadsheet formulas, data in logs."""

from __future__ import annotations

import csv
import io

from tests.bot.conftest import Chat, RealNode


async def test_message_that_is_not_valid_unicode_gets_a_plain_answer(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    node.add_customer(f"Ann {tag}")
    for text in (f"/find \ud800{tag}", f"/pay Ann {tag} 5 note \udfff", "/balance \udbff"):
        reply = await owner.send(text)
        assert "not valid text" in reply.text
    # Nothing was recorded, and the bot still works.
    assert (await owner.send(f"/find {tag}")).text.startswith(f"Ann {tag}")


async def test_statement_cells_cannot_run_as_formulas(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 250, note='=HYPERLINK("http://evil.example","pay here")')
    node.charge(ann, 100, note="@SUM(A1:A9)")
    sent = await owner.send(f"/statement {tag}", expect="sendDocument")
    rows = list(csv.reader(io.StringIO(sent.files["document"][1].decode("utf-8-sig"))))
    assert [r[4] for r in rows[1:]] == ["'=HYPERLINK(\"http://evil.example\",\"pay here\")",
                                        "'@SUM(A1:A9)"]  # fmt: skip
    assert [r[3] for r in rows[1:]] == ["-2.50", "-3.50"]  # numbers stay numbers


async def test_node_log_holds_no_customer_data_after_bot_use(
    bot, owner: Chat, node: RealNode, tag: str
) -> None:
    phone, email = "+1 555 013 7777", f"kit.{tag}@example.com"
    node.add_customer(f"Kit {tag} Marlow", phone=phone, email=email)
    for query in (f"/find {tag}", "/find 555 013 7777", f"/find {email}", f"/balance {tag}"):
        await owner.send(query)
    logged = "".join(node.output)
    for value in (tag, "0137777", "013 7777", email, "Marlow", node.owner_token):
        assert value not in logged, f"{value!r} is in the node's log"
