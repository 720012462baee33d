"""Customers' Telegram links on the node: one-time codes, links, receipts claimed once,
reminders at most once per N days, and nothing left once the customer is gone."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node import db, tokens, verify
from node.api.app import create_app
from node.clock import Clock, current_clock, use_clock
from node.config import load_config
from tests.conftest import Api
from tests.node.conftest import CUSTOMERS, problem

T = "/api/v1/telegram"
DAY_NS = 86400 * 10**9


class Jumping(Clock):
    """The system clock, moved forward by whole days when a test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0

    def time_ns(self) -> int:
        return super().time_ns() + self.offset

    def jump(self, days: float) -> None:
        self.offset += int(days * DAY_NS)


@pytest.fixture
async def shop(aiohttp_client, node_env: dict[str, str]) -> AsyncIterator[tuple[Api, Jumping]]:
    previous = current_clock()
    clock = Jumping()
    client = await aiohttp_client(create_app(load_config(environ=node_env), clock=clock))
    try:
        yield Api(client, tokens.create_token("owner"), tokens.create_token("till", "staff")), clock
    finally:
        use_clock(previous)


async def invite(api: Api, customer_id: str, **kw) -> str:
    path = f"{CUSTOMERS}/{customer_id}/telegram/invite"
    return (await api.ok("POST", path, 201, **kw))["code"]


async def link(api: Api, code: str, user: int) -> dict:
    return await api.ok("POST", f"{T}/links", 201, json={"code": code, "telegram_user_id": user})


async def refused_code(api: Api, code: str, user: int = 77) -> str:
    """A code that is no good now: checking and using it get the same 404, word for word."""
    checked = await problem(await api.post(f"{T}/invites/check", json={"code": code}), 404)
    used = await problem(await api.post(f"{T}/links", json={"code": code,
                                                            "telegram_user_id": user}), 404)
    assert checked["detail"] == used["detail"]
    return checked["detail"]


async def test_codes_are_single_use_hashed_and_expire_all_alike(shop, node_env):
    api, clock = shop
    ann = await api.customer("Ann Link", phone="+1 555 0142")
    head = (await api.ok("GET", "/api/v1/events"))["head"]
    code = await invite(api, ann["id"], staff=True)  # staff may invite
    checked = await api.ok("POST", f"{T}/invites/check", json={"code": code})
    assert checked == {"shop_name": "My Shop", "phone_last_digits": "42"}
    linked = await link(api, code, 501)
    assert (linked["customer_id"], linked["receipts"]) == (ann["id"], True)
    # Invites and links are this node's own: nothing enters the change log, nothing syncs.
    assert (await api.ok("GET", "/api/v1/events"))["head"] == head
    used = await refused_code(api, code, 502)
    made_up = await refused_code(api, "A" * 22)
    expiring = await invite(api, (await api.customer("Bo Link"))["id"])
    clock.jump(7.01)
    expired = await refused_code(api, expiring)
    assert used == made_up == expired
    assert (await api.ok("GET", f"{T}/links/501"))["customer_id"] == ann["id"]
    await problem(await api.get(f"{T}/links/502"), 404)
    database = Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    for path in database.parent.glob("shop.db*"):
        assert code.encode() not in path.read_bytes()
    # Only owners (the bot) use codes and read links; staff only invite.
    await problem(await api.post(f"{T}/invites/check", json={"code": code}, staff=True), 403)
    await problem(await api.get(f"{T}/links/501", staff=True), 403)


async def test_a_new_invite_voids_the_old_one_and_relinking_replaces_the_link(shop):
    api, _ = shop
    cy = await api.customer("Cy Link")
    old = await invite(api, cy["id"])
    new = await invite(api, cy["id"])
    await refused_code(api, old)
    await link(api, new, 601)
    conflict = await problem(await api.post(f"{CUSTOMERS}/{cy['id']}/telegram/invite"), 409)
    assert "already linked" in conflict["detail"]
    again = await invite(api, cy["id"], json={"relink": True})
    await link(api, again, 602)  # the customer's new phone
    await problem(await api.get(f"{T}/links/601"), 404)
    assert (await api.ok("GET", f"{T}/links/602"))["customer_id"] == cy["id"]


async def test_receipts_are_claimed_once_and_never_for_older_facts(shop):
    api, _ = shop
    dee = await api.customer("Dee Link")
    await api.sale(dee["id"], 1000, "account")  # before the link: no receipt
    await link(api, await invite(api, dee["id"]), 701)
    await api.pay(dee["id"], 400)
    feed = (await api.ok("GET", "/api/v1/events?limit=100"))["events"]
    older, payment = feed[-2], feed[-1]  # the sale, then the payment (links are not logged)
    assert (older["kind"], payment["kind"]) == ("sale.recorded", "ledger.credit")
    claim = await api.ok("POST", f"{T}/receipts", 201, json={"change_id": payment["id"]})
    assert (claim["telegram_user_id"], claim["amount"], claim["ledger_balance"]) == (701, 400, -600)
    assert (await api.ok("POST", f"{T}/receipts", json={"change_id": payment["id"]})) == {
        "send": False}  # fmt: skip
    assert not (await api.ok("POST", f"{T}/receipts", json={"change_id": older["id"]}))["send"]
    # Released (not delivered): claimed again. Receipts off: none.
    await api.ok("DELETE", f"{T}/messages/{claim['message_id']}")
    await api.ok("POST", f"{T}/receipts", 201, json={"change_id": payment["id"]})
    await api.ok("PATCH", f"{T}/links/701", json={"receipts": False})
    await api.pay(dee["id"], 100)
    last = (await api.ok("GET", "/api/v1/events?limit=100"))["events"][-1]
    assert not (await api.ok("POST", f"{T}/receipts", json={"change_id": last["id"]}))["send"]


async def test_the_receipts_cursor_cannot_pass_the_feeds_head(shop):
    """A cursor set past the head (a typo, a bot restored from elsewhere) would skip the
    receipts of every event that later gets a cursor below it."""
    api, _ = shop
    await api.customer("Eve Cursor")
    head = (await api.ok("GET", "/api/v1/events?limit=1"))["head"]
    await api.ok("PUT", f"{T}/receipts/cursor", json={"cursor": head})
    too_far = await api.request("PUT", f"{T}/receipts/cursor", json={"cursor": head + 1})
    refused = await problem(too_far, 422)
    assert str(head) in refused["detail"]
    assert (await api.ok("GET", f"{T}/receipts/cursor"))["cursor"] == head


async def test_reminders_once_per_n_days_whoever_asks(shop):
    api, clock = shop
    eve = await api.customer("Eve Link")
    remind = {"customer_id": eve["id"], "every_days": 3}
    await problem(await api.post(f"{T}/reminders", json=remind), 404)  # not linked
    await link(api, await invite(api, eve["id"]), 801)
    owes_nothing = await problem(await api.post(f"{T}/reminders", json=remind), 409)
    assert "owes nothing" in owes_nothing["detail"]
    await api.sale(eve["id"], 5000, "account")
    clock.jump(2)
    sent = await api.ok("POST", f"{T}/reminders", 201, json=remind)
    assert (sent["telegram_user_id"], sent["owed"], sent["age_days"]) == (801, 5000, 2)
    assert await api.ok("GET", f"{T}/overdue?min_amount=4999&after_days=2") == [
        {k: sent[k] for k in ("customer_id", "owed", "owing_since", "age_days")}]  # fmt: skip
    assert await api.ok("GET", f"{T}/overdue?after_days=3") == []
    clock.jump(2.9)
    await problem(await api.post(f"{T}/reminders", json=remind), 409)
    clock.jump(0.2)
    await api.ok("POST", f"{T}/reminders", 201, json=remind)


async def test_deleting_or_anonymizing_erases_link_invites_and_messages(shop, node_env):
    api, _ = shop
    fay = await api.customer("Fay Link")
    await link(api, await invite(api, fay["id"]), 901)
    await api.sale(fay["id"], 1000, "account")
    await api.ok("POST", f"{T}/reminders", 201, json={"customer_id": fay["id"], "every_days": 3})
    pending = await invite(api, fay["id"], json={"relink": True})
    await api.pay(fay["id"], 1000)
    await api.ok("DELETE", f"{CUSTOMERS}/{fay['id']}")  # anonymized (history)
    await problem(await api.get(f"{T}/links/901"), 404)
    await refused_code(api, pending)
    gus = await api.customer("Gus Link")
    gus_code = await invite(api, gus["id"])
    await api.ok("DELETE", f"{CUSTOMERS}/{gus['id']}")  # deleted (no history)
    await refused_code(api, gus_code)
    with sqlite3.connect(Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db") as conn:
        for table in ("telegram_link", "telegram_invite", "telegram_message"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table
    conn.close()
    # `shopnode verify` would name a link left behind.
    assert verify.differences() == []
    db.execute("INSERT INTO telegram_link(customer_id, telegram_user_id, linked_at, "
               "linked_cursor) VALUES (?, 901, '2026-01-01T00:00:00.000Z', 0)", (fay["id"],))
    assert verify.differences() == [f"customer {fay['id']}: deleted or anonymized, but "
                                    "telegram_link still ties it to a Telegram account"]
