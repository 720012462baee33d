"""Merge and restore rules, in one process: several shop databases and one central store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import changes, customers, db, hlc, ledger, loyalty, sales, settings, verify
from node.clock import Clock, use_clock
from node.errors import Conflict
from sync import worker
from sync.progress import queue_status
from sync.protocol import ProtocolError, check_change
from sync.store import CentralStore


class Chain:
    """Shops as SQLite files; `use(name)` points the node code at one of them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.central = CentralStore(f"sqlite:///{tmp / 'central.db'}")
        self.stores: dict[str, str] = {}

    def use(self, name: str) -> None:
        if db.database.obj is not None:
            db.database.close()
        db.open_database(self.tmp / f"{name}.db")
        settings.seed_settings({"earn_rate": 1, "point_value": 10, "currency": "USD",
                                "default_credit_limit": None})  # fmt: skip
        if name not in self.stores:
            self.stores[name] = self.central.add_store(name)["store_id"]
        self.current = name

    def sync(self) -> worker.RoundResult:
        central, store = self.central, self.stores[self.current]

        class Direct:
            async def push(self, payload: dict[str, Any]) -> dict[str, Any]:
                return central.push(store, payload["origin"], payload["changes"],
                                    payload.get("acked"), payload.get("epoch"))

            async def pull(self, after: int, limit: int, origin: str, after_id: str,
                           epoch: str) -> dict:
                return central.pull(after, limit, origin, after_id, epoch)

        return asyncio.run(worker.sync_round(Direct()))

    def copy(self, name: str, target: str) -> None:
        db.database.close()
        shutil.copy(self.tmp / f"{name}.db", self.tmp / f"{target}.db")
        for suffix in ("-wal", "-shm"):
            (self.tmp / f"{target}.db{suffix}").unlink(missing_ok=True)


@pytest.fixture
def chain(tmp_path: Path):
    made = Chain(tmp_path)
    yield made
    if db.database.obj is not None:
        db.database.close()
    made.central.close()


def reports() -> dict[str, int]:
    return queue_status()["reports"]


def test_a_restored_shop_that_sells_and_refunds_before_syncing_converges(chain: Chain):
    chain.use("a")
    x = customers.create_customer({"name": "X"})
    chain.sync()
    chain.copy("a", "a-backup")
    chain.use("a")
    sales.record_sale(x["id"], 1000, "cash")
    chain.sync()
    chain.copy("a-backup", "a")  # restore: the sale above is gone from A
    chain.use("a")
    old_origin = changes.origin_id()
    sale = sales.record_sale(x["id"], 700, "cash")
    sales.refund_sale(sale["id"], 100)
    result = chain.sync()
    assert "new origin identity" in " ".join(result.notes)
    assert changes.origin_id() != old_origin
    chain.sync()
    a_view = customers.get_customer(x["id"])
    chain.use("c")
    chain.sync()
    c_view = customers.get_customer(x["id"])
    assert c_view["total_spent"] == a_view["total_spent"] == 1000 + 600
    assert c_view["total_orders"] == a_view["total_orders"] == 2
    # Both sales got the day's first receipt number: kept, and reported.
    assert reports() == {"receipt_reused": 1}
    assert chain.central.status()["quarantined"] == 0


def test_a_change_that_writes_outside_the_synced_columns_is_refused(chain: Chain):
    chain.use("a")
    evil = {"rows": [["api_token", {"id": "x", "name": "pwned", "role": "owner",
                                    "token_hash": "0" * 64, "created_at": "2025"}]]}  # fmt: skip
    sneaky = {"fields": ["cid", {"ledger_balance = 123456, name": "x"}]}
    for body in (evil, sneaky, {"adds": [["customer", "cid", {"name": 1}]]}, {"other": 1}):
        change = {"id": "01900000-0000-7000-8000-000000000001", "origin": "o", "origin_seq": 1,
                  "hlc": "000000000000001-000000-o", "kind": "customer.created",
                  "entity_id": "cid", "body": json.dumps(body), "recorded_at": "2025"}  # fmt: skip
        with pytest.raises(ProtocolError):
            check_change(change)
        assert worker.apply_one(change, changes.origin_id()) == "invalid"
    assert db.fetch_one("SELECT COUNT(*) AS n FROM api_token")["n"] == 0


def test_history_that_arrives_before_its_customer_waits_for_it(chain: Chain):
    chain.use("a")
    carol = customers.create_customer({"name": "Carol", "email": "carol@example.com"})
    sale = sales.record_sale(carol["id"], 500, "account")
    created, recorded = db.fetch_all(
        "SELECT id, origin, origin_seq, hlc, kind, entity_id, body, recorded_at "
        "FROM change_log ORDER BY origin_seq"
    )
    chain.use("b")
    origin = changes.origin_id()
    assert worker.apply_one(recorded, origin) == "pending"  # the sale first: it waits
    assert queue_status()["pending"] == 1
    assert db.fetch_one("SELECT COUNT(*) AS n FROM sale")["n"] == 0
    assert worker.apply_one(created, origin) == "applied"  # ...and follows its customer in
    assert queue_status()["pending"] == 0
    view = customers.get_customer(carol["id"])
    assert (view["name"], view["email"], view["ledger_balance"]) == (
        "Carol", "carol@example.com", -500)  # fmt: skip
    assert view["recent_purchases"][0]["id"] == sale["id"]


class Ahead(Clock):
    """This machine's clock, `by_ns` fast; `frozen`: stopped at the instant it was made."""

    def __init__(self, by_ns: int, frozen: bool = False) -> None:
        super().__init__()
        self.by_ns = by_ns
        self.frozen_at = time.time_ns() if frozen else None

    def time_ns(self) -> int:
        return (self.frozen_at or time.time_ns()) + self.by_ns


@contextlib.contextmanager
def clock_ahead(by_ns: int, frozen: bool = False) -> Iterator[None]:
    previous = use_clock(Ahead(by_ns, frozen))
    try:
        yield
    finally:
        use_clock(previous)


def test_a_fast_clock_edit_waits_and_never_drags_other_clocks(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Start"})["id"]
    chain.sync()
    chain.use("b")
    chain.sync()
    month = 30 * 86400 * 10**9
    with clock_ahead(month):
        customers.update_customer(cid, {"name": "From B, a month ahead"})
    chain.sync()
    chain.use("a")
    chain.sync()
    # Held back, reported, not applied; A's own clock stays near its wall clock.
    assert reports().get("clock_ahead") == 1
    assert queue_status()["pending"] == 1
    assert customers.get_customer(cid)["name"] == "Start"
    customers.update_customer(cid, {"email": "real@example.com"})
    customers.update_customer(cid, {"name": "From A, now"})
    assert hlc.decode(db.get_meta("hlc"))[0] < time.time_ns() // 10**6 + 60_000
    chain.sync()
    chain.use("c")
    chain.sync()
    assert customers.get_customer(cid)["name"] == "From A, now"
    # A month later every node applies B's edit: the same winner everywhere.
    names = set()
    with clock_ahead(month + 10**9):
        for shop in ("a", "b", "c"):
            chain.use(shop)
            chain.sync()
            assert queue_status()["pending"] == 0
            names.add(customers.get_customer(cid)["name"])
    assert names == {"From B, a month ahead"}


def test_malformed_stamps_are_refused_not_sorted_above_real_ones(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Stamp"})["id"]
    customers.update_customer(cid, {"name": "Edited"})
    edit = db.fetch_one("SELECT id, origin, origin_seq, hlc, kind, entity_id, body, "
                        "recorded_at FROM change_log WHERE kind = 'customer.updated'")  # fmt: skip
    for bad in ("2025-06-01T10:00:00Z", "garbage", "1-2-3", "9" * 15 + "-000000-x y"):
        with pytest.raises(ValueError):
            hlc.decode(bad)
        with pytest.raises(ProtocolError, match="hlc"):
            check_change({**edit, "hlc": bad})


def test_a_sale_refunded_at_two_shops_offline_is_kept_and_refused_a_third_time(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Dup"})["id"]
    sale = sales.record_sale(cid, 1000, "account")
    chain.sync()
    chain.use("b")
    chain.sync()
    sales.refund_sale(sale["id"])
    chain.sync()
    chain.use("a")
    sales.refund_sale(sale["id"])  # A has not heard of B's refund yet
    chain.sync()
    assert ledger.ledger_sum(cid) == customers.get_customer(cid)["ledger_balance"] == 1000
    with pytest.raises(Conflict):
        sales.refund_sale(sale["id"])
    chain.use("b")
    chain.sync()
    assert customers.get_customer(cid)["ledger_balance"] == 1000


def test_debts_and_points_a_merge_reveals_are_reported_once_per_customer(chain: Chain):
    """Two shops each stay within a customer's limit and points offline; together they do
    not: the node that merges both reports each such customer once, and nobody else."""
    chain.use("a")
    capped = customers.create_customer({"name": "Capped", "credit_limit": 1000})["id"]
    saver = customers.create_customer({"name": "Saver"})["id"]
    payer = customers.create_customer({"name": "Payer", "credit_limit": 1000})["id"]
    sales.record_sale(saver, 5000, "cash")  # earns 50 points
    chain.sync()
    chain.use("b")
    chain.sync()
    ledger.record_entry(capped, "debit", 700, None)
    loyalty.redeem_points(saver, 40)
    ledger.record_entry(payer, "debit", 900, None)
    chain.sync()
    chain.use("a")
    ledger.record_entry(capped, "debit", 800, None)
    loyalty.redeem_points(saver, 30)
    ledger.record_entry(payer, "credit", 500, None)
    chain.sync()
    assert customers.get_customer(capped)["ledger_balance"] == -1500
    assert customers.get_customer(saver)["loyalty_points"] == -20
    assert customers.get_customer(payer)["ledger_balance"] == -400
    assert reports() == {"credit_limit_exceeded": 1, "points_below_zero": 1}
    details = " ".join(r["detail"] for r in db.fetch_all("SELECT detail FROM sync_report"))
    assert capped in details and saver in details and payer not in details
    assert verify.differences() == []


def _log(kind: str | None = None) -> list[dict[str, Any]]:
    where = f"WHERE kind = '{kind}'" if kind else ""
    return db.fetch_all("SELECT id, origin, origin_seq, hlc, kind, entity_id, body, recorded_at "
                        f"FROM change_log {where} ORDER BY origin_seq")  # fmt: skip


def test_a_remote_stamp_with_a_full_counter_does_not_break_the_clock(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Counter"})["id"]
    customers.update_customer(cid, {"notes": "x"})
    created, edit = _log()
    wall = time.time_ns() // 10**6
    full = hlc.encode(wall + 1000, hlc.MAX_COUNTER, edit["origin"])
    chain.use("b")
    worker.apply_one(created, changes.origin_id())
    assert worker.apply_one({**edit, "hlc": full}, changes.origin_id()) == "applied"
    customers.update_customer(cid, {"notes": "mine"})  # ticks past the full counter
    mine = [c for c in _log("customer.updated") if c["origin"] == changes.origin_id()][-1]
    check_change(mine)  # still a stamp central accepts
    assert hlc.decode(mine["hlc"]) > hlc.decode(full)


def test_many_changes_waiting_for_one_customer_all_follow_it_in(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Popular"})["id"]
    for _ in range(600):
        ledger.record_entry(cid, "credit", 1, None)
    created, *payments = _log()
    chain.use("b")
    origin = changes.origin_id()
    with db.database.atomic():
        for payment in reversed(payments):
            assert worker.apply_one(payment, origin) == "pending"
    assert worker.apply_one(created, origin) == "applied"
    assert queue_status()["pending"] == 0
    assert customers.get_customer(cid)["ledger_balance"] == 600


def test_a_waiting_change_that_cannot_apply_does_not_take_its_prerequisite_down(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Steady"})["id"]
    first = ledger.record_entry(cid, "credit", 100, None)
    ledger.record_entry(cid, "credit", 200, None)
    created, good, second = _log()
    # A hostile copy of the second payment that reuses the first payment's entry id.
    body = json.loads(second["body"])
    body["ledger_entry"][0]["id"] = first["id"]
    clash = {**second, "id": "01900000-0000-7000-8000-00000000c1a5", "origin_seq": 99,
             "entity_id": first["id"], "body": changes.encode_body(body)}  # fmt: skip
    chain.use("b")
    origin = changes.origin_id()
    assert worker.apply_one(clash, origin) == "pending"
    assert worker.apply_one(good, origin) == "pending"
    assert worker.apply_one(created, origin) == "applied"  # the customer comes in anyway
    # One of the two claims on that entry id is kept, the other quarantined and reported.
    assert customers.get_customer(cid)["ledger_balance"] in (100, 200)
    assert reports().get("quarantined") == 1 and queue_status()["pending"] == 0


def test_a_reversal_of_a_long_description_is_still_a_valid_change(chain: Chain):
    chain.use("a")
    cid = customers.create_customer({"name": "Wordy"})["id"]
    entry = ledger.record_entry(cid, "credit", 100, "x" * 500)
    ledger.reverse_entry(cid, entry["id"])
    for change in _log():
        check_change(change)


def test_a_forged_reversal_cannot_replace_the_real_one(chain: Chain):
    chain.use("a")
    alice = customers.create_customer({"name": "Alice"})["id"]
    bob = customers.create_customer({"name": "Bob"})["id"]
    entry = ledger.record_entry(alice, "credit", 500, None)
    ledger.reverse_entry(alice, entry["id"])
    reversal = _log("ledger.reversal")[0]
    chain.sync()
    body = json.loads(reversal["body"])
    row = body["ledger_entry"][0]
    row.update(customer_id=bob, amount=1_000_000, created_at="2000-01-01T00:00:00.000Z")
    forged = {**reversal, "id": "01900000-0000-7000-8000-00000000f0e9", "origin_seq": 99,
              "body": changes.encode_body(body)}  # fmt: skip
    chain.use("b")
    chain.sync()
    assert worker.apply_one(forged, changes.origin_id()) == "unapplied"
    assert customers.get_customer(alice)["ledger_balance"] == 0
    assert customers.get_customer(bob)["ledger_balance"] == 0
    assert reports().get("quarantined") == 1


def test_a_deleted_customer_leaves_no_bytes_in_the_database_files(chain: Chain):
    """Not in the rows, the -wal file, free pages or the search index's old segments."""
    chain.use("a")
    for i in range(50):
        customers.create_customer({"name": f"Filler {i}"})
    cid = customers.create_customer({"name": "Zebulon Quixotic",
                                     "email": "zebulon.q@example.com"})["id"]  # fmt: skip
    chain.sync()
    chain.use("b")
    chain.sync()
    chain.use("a")
    assert customers.delete_customer(cid) == "deleted"
    chain.sync()
    chain.use("b")
    chain.sync()
    for shop in ("a", "b"):
        files = [f for f in chain.tmp.iterdir() if f.name.startswith(f"{shop}.db")]
        raw = b"".join(f.read_bytes() for f in files).lower()
        for needle in (b"zebulon", b"quixotic", b"ebu"):  # "ebu": a trigram of the name
            assert needle not in raw, (shop, needle)


def test_a_late_creation_of_a_deleted_customer_is_kept_without_its_data(chain: Chain):
    """Even when it reaches a node unscrubbed (central scrubs it too, but a node must not
    rely on that): no live customer, no personal data in the node's change log."""
    chain.use("a")
    cid = customers.create_customer({"name": "Gone Gillian", "email": "gill@example.com"})["id"]
    customers.delete_customer(cid)
    created = _log()[0]
    created["body"] = changes.encode_body({"customer": [{
        "id": cid, "name": "Gone Gillian", "email": "gill@example.com", "phone": None,
        "address": None, "notes": None, "tags": "[]", "credit_limit": None,
        "created_at": created["recorded_at"]}]})  # the original, before the scrub
    deleted = _log("customer.deleted")[0]
    chain.use("b")
    origin = changes.origin_id()
    assert worker.apply_one(deleted, origin) == "applied"
    assert worker.apply_one(created, origin) == "applied"
    assert db.fetch_one("SELECT 1 FROM customer WHERE id = ?", (cid,)) is None
    assert all("gill@" not in c["body"] for c in _log())


def test_a_credit_larger_than_the_api_allows_is_refused_on_the_wire(chain: Chain):
    """Found attacking from outside: 1,100 credits of 2**53 each were valid changes, and
    their sum overflowed SQLite's integers at every shop: no shop could sync any more."""
    chain.use("a")
    cid = customers.create_customer({"name": "Alice"})["id"]
    ledger.record_entry(cid, "credit", 100, None)
    credit = _log("ledger.credit")[0]
    body = json.loads(credit["body"])
    body["ledger_entry"][0]["amount"] = 2**53
    with pytest.raises(ProtocolError, match="amount"):
        check_change({**credit, "body": changes.encode_body(body)})


def test_a_store_cannot_make_central_take_epoch_after_epoch(chain: Chain):
    """Found attacking from outside: an empty push claiming an acknowledgement central
    never gave made central take a new epoch every time (every shop re-reads everything)."""
    central = chain.central
    store = central.add_store("mallory")["store_id"]
    epoch = central.epoch
    claims = [central.push(store, str(uuid.uuid4()), [], acked=1000, epoch=epoch)["epoch"]
              for _ in range(3)]  # fmt: skip
    assert claims[0] != epoch  # the first claim may be a real restore...
    assert claims[1] == claims[2] == claims[0]  # ...the next ones in 10 minutes are not


def test_one_bad_change_in_a_page_is_quarantined_and_the_rest_of_the_page_kept(chain: Chain):
    """A page goes in one savepoint; a change that cannot apply sends the page back change by
    change. Copies inside the page itself are still told apart: the same change twice is a
    duplicate, the same id or origin sequence with another body a conflict."""
    chain.use("a")
    cid = customers.create_customer({"name": "Paged"})["id"]
    entry = ledger.record_entry(cid, "credit", 100, None)
    ledger.record_entry(cid, "credit", 200, None)
    sales.record_sale(cid, 700, "cash")
    created, first, second, sale = _log()
    body = json.loads(first["body"])
    body["ledger_entry"][0].update(id=str(uuid.uuid4()), type="debit", reverses_id=entry["id"],
                                   amount=99)  # does not reverse it: another amount
    forged = {**first, "id": "01900000-0000-7000-8000-00000000f0e9", "origin_seq": 90,
              "kind": "ledger.reversal", "entity_id": body["ledger_entry"][0]["id"],
              "body": changes.encode_body(body)}  # fmt: skip
    other_body = {**second, "body": second["body"].replace('"amount":200', '"amount":201')}
    reused_seq = {**other_body, "id": "01900000-0000-7000-8000-0000000005e9"}
    page = [created, first, forged, first, other_body, second, reused_seq, sale]
    chain.use("b")
    applied, conflicts = worker.apply_page(page, 8, sale["id"], changes.origin_id())
    # created, first, the changed second payment (it came first), and the sale; the forged
    # reversal is quarantined, the real second payment and the reused sequence are conflicts.
    assert (applied, conflicts) == (4, 3)
    got = customers.get_customer(cid)
    assert (got["ledger_balance"], got["total_spent"], got["total_orders"]) == (301, 700, 1)
    assert reports() == {"quarantined": 1, "conflict": 2}
    assert db.fetch_one("SELECT COUNT(*) AS n FROM change_log")["n"] == 4
    # The same page again: every change is known (the forged one is quarantined again).
    assert worker.apply_page(page, 8, sale["id"], changes.origin_id()) == (0, 3)
    assert customers.get_customer(cid)["ledger_balance"] == 301


def test_a_write_becomes_one_change_only_when_it_completes(chain: Chain):
    """changes.recording() logs one change when its block ends; a block that fails, or
    records nothing, leaves neither rows nor a change."""
    chain.use("a")
    cid = customers.create_customer({"name": "Logged"})["id"]
    count = "SELECT (SELECT COUNT(*) FROM change_log) AS changes, " \
            "(SELECT COUNT(*) FROM ledger_entry) AS entries"  # fmt: skip
    before = db.fetch_one(count)
    with pytest.raises(Conflict):  # fails after its entry was written
        with changes.recording("ledger.credit") as change:
            change.entity_id = ledger.append_entry(change, cid, "credit", 100, "x")
            raise Conflict("the till changed its mind")
    with pytest.raises(RuntimeError):  # nothing recorded: never an empty change
        with changes.recording("ledger.credit", cid):
            pass
    assert db.fetch_one(count) == before
    assert customers.get_customer(cid)["ledger_balance"] == 0
    sale = sales.record_sale(cid, 500, "account")
    (logged,) = _log("sale.recorded")
    assert logged["entity_id"] == sale["id"]
    assert set(json.loads(logged["body"])) == {"sale", "loyalty_event", "ledger_entry"}


def _history(chain: Chain) -> list[dict[str, Any]]:
    """Two shops' changes of every kind: an over-refund across shops, a late discount, a
    reversal, one field edited at both, a deletion and an anonymization, an edit and a sale
    after the tombstone."""
    chain.use("a")
    ids = [customers.create_customer({"name": f"C{i}", "email": f"c{i}@example.com",
                                      "phone": "+1 555 0100"})["id"] for i in range(4)]  # fmt: skip
    ledger.record_entry(ids[0], "credit", 5000, None)
    first = sales.record_sale(ids[0], 1000, "account")
    second = sales.record_sale(ids[1], 800, "cash")
    sales.refund_sale(first["id"], 300)
    chain.sync()
    chain.use("b")
    chain.sync()
    sales.refund_sale(first["id"], 700)
    loyalty.redeem_points(ids[1], 5, second["id"])
    sales.record_sale(ids[2], 900, "account")
    ledger.record_entry(ids[2], "credit", 900, None)
    customers.update_customer(ids[3], {"name": "B-name"})
    chain.use("a")
    sales.refund_sale(first["id"], 700)
    entry = ledger.record_entry(ids[1], "debit", 50, None)
    ledger.reverse_entry(ids[1], entry["id"])
    customers.update_customer(ids[3], {"name": "A-name", "email": "new@example.com"})
    sales.refund_sale(sales.record_sale(ids[3], 400, "cash")["id"])
    chain.sync()
    chain.use("b")
    chain.sync()
    customers.delete_customer(ids[3])  # anonymized: it has history
    customers.delete_customer(customers.create_customer({"name": "Gone"})["id"])
    chain.use("a")
    customers.update_customer(ids[3], {"phone": "+44 1234"})
    sales.record_sale(ids[3], 200, "cash")
    held = {row["id"]: row for row in _log()}
    chain.use("b")
    held.update({row["id"]: row for row in _log()})
    return list(held.values())


def _everything() -> dict[str, Any]:
    """What two nodes holding the same changes must agree on, stamps of this node aside."""
    found: dict[str, Any] = {}
    for table in ("customer", "sale", "refund", "sale_discount", "ledger_entry",
                  "loyalty_event", "tombstone", "sync_pending", "customer_field_clock"):
        rows = db.fetch_all(f"SELECT * FROM {table}")
        for row in rows:
            for local in ("updated_at", "anonymized_at", "recorded_at", "received_at"):
                row.pop(local, None)
        found[table] = sorted(json.dumps(row, sort_keys=True) for row in rows)
    found["change_log"] = sorted((r["id"], r["body"]) for r in _log())
    found["reports"] = sorted((r["kind"], r["change_id"] or "") for r in db.fetch_all(
        "SELECT kind, change_id FROM sync_report"))  # fmt: skip
    return found


def test_a_page_applied_at_once_ends_as_its_changes_applied_one_by_one(chain: Chain):
    """Differential, over shuffled pages (prerequisites late, copies, changed bodies, reused
    sequences, a change that cannot apply): apply_page's one savepoint and per-page reads end
    exactly as every change in its own savepoint, with books that verify."""
    from sync import merge

    history = _history(chain)
    credit = next(r for r in history if r["kind"] == "ledger.credit")
    body = json.loads(credit["body"])
    row = body["ledger_entry"][0]
    body["ledger_entry"][0] = {**row, "id": "01900000-0000-7000-8000-00000000f0e8",
                               "type": "debit", "amount": row["amount"] + 1,
                               "reverses_id": row["id"]}  # fmt: skip
    forged = {**credit, "id": "01900000-0000-7000-8000-00000000f0e9", "origin_seq": 9000,
              "kind": "ledger.reversal", "entity_id": body["ledger_entry"][0]["id"],
              "body": changes.encode_body(body)}  # fmt: skip
    for seed in range(12):
        rng = random.Random(seed)
        stream = rng.sample(history, len(history))
        extras = [rng.choice(history) for _ in range(rng.randrange(4))]
        for original in rng.sample(history, 2):
            body_text = original["body"].replace('"created_at":"2', '"created_at":"1', 1)
            changed = {**original, "body": body_text}  # the same id, another body
            renumbered = {**changed, "id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
            extras.append(renumbered if rng.random() < 0.5 else changed)
        if seed % 3 == 0:
            extras.append(forged)
        for extra in extras:
            stream.insert(rng.randrange(len(stream) + 1), extra)
        cuts = [0, *sorted(rng.sample(range(1, len(stream)), rng.randrange(5))), len(stream)]
        pages = [stream[start:end] for start, end in zip(cuts, cuts[1:], strict=False)]
        # One instant for both runs: which of two claims on one fact id is kept depends on
        # when each arrived, and both runs must see the same arrivals.
        with clock_ahead(0, frozen=True):
            chain.use(f"paged{seed}")
            for page in pages:
                worker.apply_page([dict(c) for c in page], 1, "", changes.origin_id())
            paged = _everything()
            assert verify.differences() == []
            chain.use(f"one-by-one{seed}")
            for page in pages:
                with db.database.atomic(), merge.totals_derived():
                    for change in page:
                        merge.apply_isolated(check_change(dict(change)), changes.origin_id())
            assert _everything() == paged, f"seed {seed}"
