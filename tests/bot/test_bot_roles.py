"""The bot acts for each user with a token of that user's role, and reads button payloads
against a strict grammar: a forged payload makes no call to the node at all."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from bot.actions import BALANCE, DEBIT, PAY, Action
from bot.confirm import EXPIRED
from bot.roles import NO_STAFF_TOKEN
from tests.bot.conftest import Chat, RealNode, bot_settings, running_bot

# Payloads a staff user's own Telegram client can send in place of a real button's.
FORGED = [
    "pk|B|~x/../reports/receivables?limit=1000|0",  # the id was put into the URL path as is
    "pk|B|~x/../../reports/receivables?limit=1000|0",  # out of /customers/ altogether
    "pk|L|~x/../../customers?limit=100|0",
    "pk|B|~..%2F..%2Freports%2Freceivables|0",
    "ok|P|~x/../../settings|1",
    "pk|B|not-a-uuid|0",
    "pk|B|" + base64.urlsafe_b64encode(b"../reports/recv").decode() + "|0",  # 20 characters
    "ok|P|{packed}|0",  # nothing to pay
    "ok|P|{packed}|1000000000001",  # more than the node's largest amount
    "ok|R|{packed}|99999999999999999999",
    "pk|B|{packed}|0|../reports/receivables",
    "ok|B|{packed}|0",  # a view is never confirmed
    "ok|P|{packed}|-100",
    "pk|S|{packed}|0\n",
    "pk",
    "reports/receivables",
]


# The bot follows the events feed for receipts on its own timer: not a tap's doing.
RECEIPT_FOLLOWING = (" /api/v1/events", " /api/v1/telegram/receipts")


def asked(node: RealNode) -> list[str]:
    """The node's access lines so far, without the receipts the bot follows by itself."""
    return [line for line in node.access_lines()
            if not any(route in line for route in RECEIPT_FOLLOWING)]  # fmt: skip


async def settle(node: RealNode, seconds: float = 0.5) -> list[str]:
    """The node's access lines, once any request now in flight has been logged (a request
    the bot may still make: wait `seconds` for it)."""
    await asyncio.sleep(seconds)
    return asked(node)


async def logged(node: RealNode, after: int) -> list[str]:
    """The node's access lines once the requests behind the bot's last answer are logged:
    more than `after` of them, then none new for 0.1 s (the node logs a request as it
    answers it, so they are all in before the bot's answer comes, give or take a write)."""
    deadline = asyncio.get_running_loop().time() + 10
    lines = asked(node)
    while len(lines) <= after:
        assert asyncio.get_running_loop().time() < deadline, "the node logged no request"
        await asyncio.sleep(0.02)
        lines = asked(node)
    while True:
        await asyncio.sleep(0.1)
        if (now := asked(node)) == lines:
            return lines
        lines = now


@pytest.mark.parametrize("payload", FORGED)
async def test_a_forged_button_payload_makes_no_node_call(
    bot, staff: Chat, node: RealNode, tag: str, payload: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    node.charge(ann, 1200)
    seen = len(asked(node))
    shown = await staff.send(f"/find {tag}")  # a real message of the bot's to tap on
    packed = Action(PAY, ann["id"], 1).data("ok").split("|")[2]
    before = await logged(node, seen)
    assert any("GET /api/v1/customers " in line for line in before), "no access log to watch"

    answer = await staff.tap_data(shown.result, payload.format(packed=packed))

    assert answer.params["text"] == EXPIRED  # a short, polite answer
    assert await settle(node) == before  # and the node was not asked anything
    assert node.ledger(ann)[0]["amount"] == 1200 and len(node.ledger(ann)) == 1


async def test_a_real_button_still_works_after_forged_ones(
    bot, staff: Chat, node: RealNode, tag: str
) -> None:
    ann = node.add_customer(f"Ann {tag}")
    shown = await staff.send(f"/find {tag}")
    await staff.tap_data(shown.result, "pk|B|~x/../reports/receivables?limit=1000|0")
    start = len(staff.telegram.calls)
    await staff.tap_data(shown.result, Action(BALANCE, ann["id"]).data("pk"))
    shown_balance = await staff.telegram.wait_for(
        "editMessageText", lambda c: f"Ann {tag}" in c.text, start
    )
    assert "Owes nothing." in shown_balance.text


async def test_the_node_refuses_staff_what_staff_may_not_do_even_past_the_bots_check(
    bot, staff: Chat, node: RealNode, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the bot's own role check gone (a bug, a forged tap), the node still says no:
    the bot calls it with a staff token for staff."""
    monkeypatch.setattr("bot.confirm.may_act", lambda *args: True)
    ann = node.add_customer(f"Ann {tag}")
    shown = await staff.send(f"/pay {tag} 1")  # a confirmation message to tap on
    before = len(await settle(node, 0))

    await staff.tap_data(shown.result, Action(DEBIT, ann["id"], 10000).data("ok"))

    edited = await staff.edited(shown)
    assert edited.text == "❌ Not recorded. The shop node does not allow that for your role."
    assert node.ledger(ann) == []  # no manual debit
    new = (await settle(node, 0.3))[before:]
    assert any("POST /api/v1/customers/{id}/ledger 403" in line for line in new), new


async def test_staff_requests_carry_the_staff_token_and_owners_the_owner_token(
    node: RealNode, telegram, owner: Chat, staff: Chat, tag: str
) -> None:
    """Revoking the staff token stops staff, not owners: each role has its own token."""
    name = f"bot-staff-{tag}"
    staff_token = node.create_token(name, "staff")
    node.add_customer(f"Ann {tag}")
    settings = bot_settings(node, telegram, node_staff_token=staff_token)
    async for _ in running_bot(settings):
        assert (await staff.send(f"/find {tag}")).text.startswith(f"Ann {tag}")
        await asyncio.to_thread(node.cli, "token", "revoke", name)
        refused = await staff.send(f"/find {tag}")
        assert refused.text == "The shop node did not accept the bot's API token for your role."
        assert (await owner.send(f"/find {tag}")).text.startswith(f"Ann {tag}")


async def test_without_a_staff_token_staff_get_a_clear_refusal_and_no_node_call(
    node: RealNode, telegram, owner: Chat, staff: Chat, tag: str
) -> None:
    """`shopnode bot` alone without `[bot] node_staff_token`: the bot never lends staff the
    owner's token, not even for reads."""
    ann = node.add_customer(f"Ann {tag}")
    settings = bot_settings(node, telegram, node_staff_token="")
    async for _ in running_bot(settings):
        seen = len(asked(node))
        shown = await owner.send(f"/find {tag}")
        before = await logged(node, seen)
        for command in (f"/find {tag}", f"/balance {tag}", f"/pay {tag} 5", "/help"):
            assert (await staff.send(command)).text == NO_STAFF_TOKEN
        answer = await staff.tap_data(shown.result, Action(BALANCE, ann["id"]).data("pk"))
        assert answer.params["text"] == NO_STAFF_TOKEN
        assert await settle(node) == before
        assert (await owner.send(f"/balance {tag}")).text.startswith(f"Ann {tag}")
    assert node.ledger(ann) == []


def test_forged_ids_are_never_put_into_a_path() -> None:
    """The client checks every id it puts into a URL, whoever handed it the id."""
    from bot.client import NodeClient, NodeError

    async def attempt() -> None:
        async with NodeClient("http://127.0.0.1:9", "sn_x") as client:
            for bad in ("x/../reports/receivables?limit=1000", "..", "%2e%2e", "", "a" * 36):
                with pytest.raises(NodeError) as caught:
                    await client.customer(bad)
                assert caught.value.status == 400 and not caught.value.retryable
            with pytest.raises(NodeError):
                await client.record_ledger_entry("../settings", "debit", 1, "x", "k")
            with pytest.raises(NodeError):
                await client.record_account_sale(str(uuid.uuid4()) + "/", 1, "k")

    asyncio.run(attempt())
