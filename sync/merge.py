"""Applying other shops' changes to this node: facts in, totals derived here.

- facts (customers, sales, refunds, late discounts, ledger entries, points events) are
  stored once, keyed by their ids: they merge as sets, and every total is recomputed from
  them by node/derive.py, so no change can move a balance by itself;
- a fact whose prerequisite has not arrived (a refund before its sale, an entry before its
  customer, a reversal before the entry it reverses) waits in `sync_pending` and is applied
  when the prerequisite arrives; nothing is skipped;
- profile fields are last-writer-wins per field under the hybrid logical clock, stamps
  compared as parsed values; an edit stamped beyond our clock's tolerance waits until our
  wall clock reaches it (it is reported), so a fast clock never takes a field over;
- a deletion or anonymization is a tombstone, kept forever: every later or late change for
  that customer is stored without personal data and cannot bring the customer back;
- one entry has at most one reversal: when two shops reverse it offline, every node keeps
  the earlier one and reports the other.
A change already held (same id) is skipped; the same id with another body is reported,
never applied over the original. Overdrafts revealed by a merge are kept and reported.

The SQL here is hand-written: bench/sync.py's catch-up runs it for every change (node/db.py).
A page's rows are held back and written a table at a time (node/db.py insert_rows), before anything
reads the tables they go to; what a page needs to know (changes held, customers held or
tombstoned) is read once for the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import peewee

from node import changes, derive, hlc
from node.changes import TOMBSTONE_KINDS
from node.clock import now_iso
from node.customers import scrub_customer, set_profile
from node.db import checkpoint, database, execute, fetch_all, fetch_one, insert_rows, marks
from node.ledger import credit_limit_for
from node.models import SCRUBBED_ROW
from sync.protocol import FACTS

CLOCK = "clock"  # what an edit stamped too far ahead waits for



def report(kind: str, detail: str, change_id: str | None = None) -> None:
    execute(
        "INSERT INTO sync_report(kind, change_id, detail, created_at) VALUES (?, ?, ?, ?)",
        (kind, change_id, detail, now_iso()),
    )


def apply_change(change: dict[str, Any], my_origin: str) -> str:
    """Apply one checked remote change (caller holds a savepoint):
    applied / duplicate / conflict / pending."""
    held, taken = _logged_as(change)
    if held is None and _maybe_waiting:
        waiting = fetch_one("SELECT change FROM sync_pending WHERE change_id = ?", (change["id"],))
        held = json.loads(waiting["change"])["body"] if waiting else None
    if held is not None:
        if changes.same_change(change["kind"], held, change["body"]):
            return "duplicate"
        report("conflict", "same change id with a different body; kept ours", change["id"])
        return "conflict"
    if change["origin"] == my_origin:
        report("conflict", "a change under this node's own origin came back unknown", change["id"])
        return "conflict"
    if taken is not None:
        report("conflict", f"origin sequence reused by another change {taken}", change["id"])
        return "conflict"
    body = _body(change)
    outcome = _hold_or_apply(change, body, my_origin)
    if outcome == "applied" and _maybe_waiting:
        _release(_made_by(change, body), my_origin)
    return outcome


def _logged_as(change: dict[str, Any]) -> tuple[str | None, str | None]:
    """The body this node logged under the change's id, and the id of another change
    logged under its origin and sequence (None when there is none)."""
    if _log_view is not None:
        bodies, numbered = _log_view
        taken = numbered.get((change["origin"], change["origin_seq"]))
        return bodies.get(change["id"]), taken if taken != change["id"] else None
    _write_rows()
    found = fetch_all(
        "SELECT id, body FROM change_log WHERE id = ? OR (origin = ? AND origin_seq = ?)",
        (change["id"], change["origin"], change["origin_seq"]),
    )
    held = next((r["body"] for r in found if r["id"] == change["id"]), None)
    taken = next((r["id"] for r in found if r["id"] != change["id"]), None)
    return held, taken


def _read_log(page: list[dict[str, Any]]) -> LogView:
    """What the change log holds of a page's changes, and which of the customers they name
    are held here or tombstoned, in a few queries for the page."""
    _read_customers(page)
    bodies: dict[str, str] = {}
    numbered: dict[tuple[str, int], str] = {}
    by_origin: dict[str, list[int]] = {}
    for change in page:
        by_origin.setdefault(change["origin"], []).append(change["origin_seq"])
    for chunk in _chunks([change["id"] for change in page]):
        for row in fetch_all(f"SELECT id, body FROM change_log WHERE id IN ({marks(chunk)})",
                             chunk):  # fmt: skip
            bodies[row["id"]] = row["body"]
    for origin, numbers in by_origin.items():
        for chunk in _chunks(numbers):
            for row in fetch_all(
                "SELECT id, origin_seq FROM change_log WHERE origin = ? "
                f"AND origin_seq IN ({marks(chunk)})",
                (origin, *chunk),
            ):
                numbered[(origin, row["origin_seq"])] = row["id"]
    return bodies, numbered


def _read_customers(page: list[dict[str, Any]]) -> None:
    global _page_customers
    named: set[str] = set()
    for change in page:
        try:
            customer_id = _customer_of(change, _body(change))
        except UNAPPLICABLE:  # applying it says why (quarantined)
            continue
        if isinstance(customer_id, str):
            named.add(customer_id)
    stones: set[str] = set()
    for chunk in _chunks(sorted(named)):
        _customers_held.update(row["id"] for row in fetch_all(
            f"SELECT id FROM customer WHERE id IN ({marks(chunk)})", chunk))  # fmt: skip
        stones.update(row["customer_id"] for row in fetch_all(
            f"SELECT customer_id FROM tombstone WHERE customer_id IN ({marks(chunk)})", chunk))
    _page_customers = (named, stones)


def _chunks(values: list[Any], size: int = 500) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _body(change: dict[str, Any]) -> dict[str, Any]:
    """The change's body, parsed once for the page (sync/worker.py checked it)."""
    body = _parsed_bodies.get(change["body"])
    return body if body is not None else orjson.loads(change["body"])


def _tombstoned(customer_id: str) -> bool:
    if _page_customers is not None and customer_id in _page_customers[0]:
        return customer_id in _page_customers[1]
    return changes.tombstoned(customer_id)


def _insert(table: str, row: dict[str, Any]) -> None:
    """Hold a row back, to be written with the page's other rows of its table."""
    _held_rows.setdefault((table, tuple(row)), []).append(row)


def _write_rows() -> None:
    """Write the rows held back, a statement per table (referenced tables first), then
    report receipt numbers they reuse. Before anything reads what they may hold."""
    if _held_rows:
        held = sorted(_held_rows.items(), key=lambda item: INSERT_ORDER[item[0][0]])
        _held_rows.clear()
        for (table, _), rows in held:
            insert_rows(table, rows)
    if _new_receipts:
        _report_receipt_clashes()


def _drop_rows() -> None:
    """Forget rows held back by a savepoint that rolled back."""
    _held_rows.clear()
    _new_receipts.clear()


def _log(change: dict[str, Any]) -> None:
    _insert("change_log", change)
    if _log_view is not None:
        bodies, numbered = _log_view
        bodies[change["id"]] = change["body"]
        numbered[(change["origin"], change["origin_seq"])] = change["id"]


def _forget_page_reads() -> None:
    """What this page read may be stale (a savepoint rolled back, or a scrub rewrote logged
    bodies): look things up again."""
    global _log_view, _page_customers
    _customers_held.clear()
    _log_view = None
    _page_customers = None


def _hold_or_apply(change: dict[str, Any], body: dict[str, Any], my_origin: str) -> str:
    """Hold a change whose prerequisite is missing (pending), else apply it (applied)."""
    waits_for = _missing(change, body)
    if waits_for is not None:
        _hold(change, waits_for)
        return "pending"
    _apply(change, body, my_origin)
    return "applied"


# What apply_change may raise for a change that cannot be applied (it is quarantined).
UNAPPLICABLE = (peewee.IntegrityError, ValueError, KeyError, TypeError)


def apply_isolated(change: dict[str, Any], my_origin: str, release: bool = True) -> str:
    """apply_change in its own savepoint: a change that cannot be applied is quarantined
    (reported, rolled back) and never takes the changes around it down with it. Without
    `release`, the changes that waited for it stay for the caller's worklist."""
    _write_rows()  # what came before stays, whatever becomes of this one
    try:
        with database.atomic():
            if release:
                outcome = apply_change(change, my_origin)
            else:
                outcome = _hold_or_apply(change, _body(change), my_origin)
            _write_rows()  # inside the savepoint: a row that cannot be stored is this change's
            return outcome
    except UNAPPLICABLE as exc:
        _drop_rows()
        _forget_page_reads()  # what the rolled-back savepoint saw may be gone
        report("quarantined", f"{change['kind']} could not be applied: "
               f"{type(exc).__name__}: {exc}", change["id"])  # fmt: skip
        return "unapplied"


def _customer_of(change: dict[str, Any], body: dict[str, Any]) -> str | None:
    if change["kind"] in TOMBSTONE_KINDS or change["kind"] == "customer.updated":
        return body["customer_id"]
    if change["kind"] in ("customer.created", "loyalty.redeemed"):
        return change["entity_id"]  # the customer's id (sync/protocol.py checks it)
    for table in FACTS[change["kind"]]:
        for row in body.get(table, []):
            if "customer_id" in row:
                return row["customer_id"]
    return None  # a refund: its sale names the customer


def _held_customer(customer_id: str) -> bool:
    """The customer's row is here (remembered for the page: most changes of a page are
    about customers already seen in it)."""
    if customer_id in _customers_held:
        return True
    if _page_customers is not None and customer_id in _page_customers[0]:
        return False  # read for the page: not here
    if fetch_one("SELECT 1 FROM customer WHERE id = ?", (customer_id,)) is None:
        return False
    _customers_held.add(customer_id)
    return True


def _known_customer(customer_id: str) -> bool:
    return _held_customer(customer_id) or _tombstoned(customer_id)


def _missing(change: dict[str, Any], body: dict[str, Any]) -> str | None:
    """What this change still waits for: an entity id, CLOCK, or None (ready)."""
    kind = change["kind"]
    if kind in ("customer.created", *TOMBSTONE_KINDS):
        return None
    if kind == "customer.updated" and hlc.too_far_ahead(change["hlc"]):
        return CLOCK
    customer_id = _customer_of(change, body)
    if customer_id is not None and not _known_customer(customer_id):
        return customer_id
    rows = [row for table in FACTS.get(kind, {}) for row in body.get(table, [])]
    own_sale = change["entity_id"] if kind == "sale.recorded" else None
    for sale_id in sorted({r["sale_id"] for r in rows if r.get("sale_id")} - {own_sale}):
        if not _stored("sale", sale_id):
            return sale_id
    for row in body.get("ledger_entry", []):
        if row["reverses_id"] and not _stored("ledger_entry", row["reverses_id"]):
            return row["reverses_id"]
    return None


def _stored(table: str, row_id: str) -> bool:
    _write_rows()
    return fetch_one(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)) is not None


def _hold(change: dict[str, Any], waits_for: str) -> None:
    global _maybe_waiting
    _maybe_waiting = True
    if waits_for == CLOCK:
        ahead = hlc.ahead_ms(change["hlc"]) / 1000
        report("clock_ahead", f"an edit stamped {ahead:.0f} s ahead of this node's clock "
               "waits until the clock gets there", change["id"])  # fmt: skip
    customer_id = _customer_of(change, _body(change)) or change["entity_id"]
    if customer_id and _tombstoned(customer_id):
        change = {**change, "body": changes.scrubbed_text(change["kind"], change["body"])}
    execute(
        "INSERT INTO sync_pending(change_id, entity_id, waits_for, change, received_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (change["id"], customer_id, waits_for, json.dumps(change), now_iso()),
    )


def _made_by(change: dict[str, Any], body: dict[str, Any]) -> set[str]:
    """The ids a change brings that other changes may wait for."""
    made = {change["entity_id"]}
    for table in FACTS.get(change["kind"], {}):
        made.update(row["id"] for row in body.get(table, []))
    if change["kind"] in TOMBSTONE_KINDS:
        made.add(body["customer_id"])
    return made


def _release(made: set[str], my_origin: str) -> None:
    """Apply the changes that waited for these ids, and those that waited for them in turn
    (a worklist, not recursion: a chain of any length), each in its own savepoint."""
    todo = set(made)
    while todo:
        waiting = fetch_all(
            f"SELECT change_id, change FROM sync_pending WHERE waits_for IN ({marks(todo)}) "
            "ORDER BY received_at, change_id",
            tuple(todo),
        )
        todo = set()
        for row in waiting:
            execute("DELETE FROM sync_pending WHERE change_id = ?", (row["change_id"],))
            change = json.loads(row["change"])
            if apply_isolated(change, my_origin, release=False) == "applied":
                todo |= _made_by(change, orjson.loads(change["body"]))


def retry_clock_waits(my_origin: str) -> int:
    """Apply edits that waited for our clock and no longer are ahead of it."""
    applied = 0
    for row in fetch_all(
        "SELECT change_id, change FROM sync_pending WHERE waits_for = ? ORDER BY change_id",
        (CLOCK,),
    ):
        change = json.loads(row["change"])
        if not hlc.too_far_ahead(change["hlc"]):
            execute("DELETE FROM sync_pending WHERE change_id = ?", (row["change_id"],))
            applied += apply_isolated(change, my_origin) == "applied"
    return applied


def _apply(change: dict[str, Any], body: dict[str, Any], my_origin: str) -> None:
    kind = change["kind"]
    global _latest_stamp
    if hlc.too_far_ahead(change["hlc"]):
        report("clock_ahead", f"remote clock {change['hlc']} is far ahead of ours", change["id"])
    else:
        stamp = hlc.decode(change["hlc"])
        if _latest_stamp is None or stamp > _latest_stamp[0]:
            _latest_stamp = (stamp, change["hlc"])  # folded into our clock when the page ends
    profile = kind in ("customer.created", "customer.updated")
    if profile and _tombstoned(_customer_of(change, body)):
        # A late creation or edit of a deleted customer: keep the change, not the data;
        # the tombstone wins, so nothing else is done with it.
        _log({**change, "body": changes.scrubbed_text(kind, change["body"])})
        return
    _log(change)
    if kind == "customer.created":
        _create_customer(body["customer"][0], change)
    elif kind == "customer.updated":
        _merge_fields(body["customer_id"], body["fields"], change["hlc"])
    elif kind in TOMBSTONE_KINDS:
        _tombstone(kind, body, change)
    else:
        _store_facts(kind, body, change)


def _create_customer(row: dict[str, Any], change: dict[str, Any]) -> None:
    if _held_customer(row["id"]):
        report("conflict", f"customer {row['id']} was created twice", change["id"])
        return
    _insert("customer", changes.fact_row("customer", row))
    _customers_held.add(row["id"])


def _merge_fields(customer_id: str, fields: dict[str, Any], stamp: str) -> None:
    _write_rows()
    clocks = {
        r["field"]: hlc.decode(r["hlc"])
        for r in fetch_all(
            "SELECT field, hlc FROM customer_field_clock WHERE customer_id = ?", (customer_id,)
        )
    }
    mine = hlc.decode(stamp)
    winners = {f: v for f, v in fields.items() if f not in clocks or mine > clocks[f]}
    if winners:
        set_profile(customer_id, winners)
        changes.set_field_clocks(customer_id, winners, stamp)


def _tombstone(kind: str, body: dict[str, Any], change: dict[str, Any]) -> None:
    customer_id = body["customer_id"]
    _write_rows()
    changes.add_tombstone(customer_id, kind.split(".")[1], body.get("created_at"), change["id"])
    _forget_page_reads()
    if fetch_one("SELECT 1 FROM customer WHERE id = ?", (customer_id,)) is not None:
        scrub_customer(customer_id)
    changes.scrub_logged_changes(customer_id)
    # The old bytes must not linger in the -wal file: done once the transaction commits.
    checkpoint()


def _ensure_customer(customer_id: str, fact_created_at: str) -> None:
    """History for a customer this node deleted: kept under an anonymized placeholder."""
    if _held_customer(customer_id):
        return
    stone = fetch_one("SELECT created_at FROM tombstone WHERE customer_id = ?", (customer_id,))
    stamp = now_iso()
    row = {"id": customer_id, **SCRUBBED_ROW,
           "created_at": (stone and stone["created_at"]) or fact_created_at,
           "updated_at": stamp, "anonymized_at": stamp}  # fmt: skip
    _insert("customer", row)
    _customers_held.add(customer_id)


def _store_facts(kind: str, body: dict[str, Any], change: dict[str, Any]) -> None:
    takes_away = False
    customer_id = None
    sales = set()
    for table in FACTS[kind]:
        for row in body.get(table, []):
            if "customer_id" in row and row["customer_id"] != customer_id:
                customer_id = row["customer_id"]
                _ensure_customer(customer_id, row["created_at"])
            if table == "ledger_entry" and row["reverses_id"]:
                if not _keep_one_reversal(row, change):
                    continue
            _insert(table, changes.fact_row(table, row))
            if table == "sale":
                _new_receipts.append((row, change["id"]))
            takes_away |= (table == "ledger_entry" and row["type"] == "debit"
                           or table == "loyalty_event" and row["points"] < 0)  # fmt: skip
            sales.add(row["id"] if table == "sale" else row.get("sale_id"))
            if table == "sale":
                new_sales.add(row["id"])
            elif table in ("refund", "sale_discount"):
                fed_sales.add(row["sale_id"])
            if table == "refund":
                refunded_sales.add(row["sale_id"])
            if "customer_id" in row:
                touched_totals.setdefault(row["customer_id"], set()).update(
                    derive.FEEDS[table])
    # Totals are recomputed once per page (flush), not once per fact.
    touched_sales.update(sales - {None})
    if customer_id is not None:
        touched_customers[customer_id] = touched_customers.get(customer_id) or (
            change["id"] if takes_away else None)


# What the changes applied since the last flush() touched: sales, and customers with the
# id of a change that took something away from them (for the overdraft report), if any.
touched_sales: set[str] = set()
refunded_sales: set[str] = set()
# Sales stored since the last flush, and sales that refunds or late discounts fed: a new sale
# fed by nothing else already holds its counters (its till's values), so it is not re-derived.
new_sales: set[str] = set()
fed_sales: set[str] = set()
touched_customers: dict[str, str | None] = {}
touched_totals: dict[str, set[str]] = {}  # customer -> the totals its new facts feed
# Inside totals_deferred: what the pages applied so far touched (as the six above), for
# their totals to be recomputed when it ends, not per page.
Touched = tuple[set[str], set[str], set[str], set[str], dict[str, str | None],
                dict[str, set[str]]]  # fmt: skip
_deferred: Touched | None = None
# False while sync_pending is known to be empty (checked once per page): saves two lookups
# a change during a catch-up.
_maybe_waiting = True
# Customers known to have a row here, and the latest remote stamp seen, in this page.
_customers_held: set[str] = set()
_latest_stamp: tuple[tuple[int, int, str], str] | None = None  # (parsed, text)
# What the change log holds of the page's changes (read once for the page, kept current as
# its changes are logged): change id -> body, (origin, origin_seq) -> change id. None
# outside a page or once it may be stale: then each change looks itself up.
LogView = tuple[dict[str, str], dict[tuple[str, int], str]]
_log_view: LogView | None = None
# The customers the page's changes name (those held are in _customers_held), and which of
# them are tombstoned; None outside a page or once it may be stale.
_page_customers: tuple[set[str], set[str]] | None = None
# Bodies of the page's changes as parsed when they were checked: body text -> body.
_parsed_bodies: dict[str, dict[str, Any]] = {}
# Rows of the page held back to be written a table at a time (node/db.py insert_rows): (table,
# columns) -> rows; and new sales whose receipt numbers are checked once they are written.
# Referenced tables are written first (foreign keys).
_held_rows: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
_new_receipts: list[tuple[dict[str, Any], str]] = []
INSERT_ORDER = {table: n for n, table in enumerate((
    "customer", "sale", "refund", "sale_discount", "ledger_entry", "loyalty_event",
    "change_log"))}  # fmt: skip


def apply_page(page: list[dict[str, Any]], my_origin: str,
               bodies: list[dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """Apply a page of checked changes (caller holds a transaction), totals derived once
    for the page; `bodies` are their bodies as parsed by the check, if at hand. The page
    goes in one savepoint, its rows written a table at a time; only when a change in it
    cannot be applied is the page applied again change by change, each in its own
    savepoint, so the bad one is quarantined and the others kept (bench/sync.py's
    catch-up)."""
    _parsed_bodies.clear()
    if bodies is not None:
        _parsed_bodies.update(zip((change["body"] for change in page), bodies, strict=True))
    try:
        try:
            with database.atomic(), totals_derived(page):
                return [apply_change(change, my_origin) for change in page]
        except UNAPPLICABLE:
            with totals_derived(page):
                return [apply_isolated(change, my_origin) for change in page]
    finally:
        _parsed_bodies.clear()


@contextmanager
def totals_derived(page: list[dict[str, Any]] | None = None) -> Iterator[None]:
    """Changes applied inside feed totals that are recomputed once, at the end (inside
    the caller's transaction): once per page instead of once per fact; inside
    totals_deferred, once for all its pages. With the `page` about to be applied, what the
    change log holds of it is read once, not per change."""
    global _maybe_waiting, _log_view
    _start_page()
    _maybe_waiting = fetch_one("SELECT EXISTS (SELECT 1 FROM sync_pending) AS n")["n"] == 1
    _log_view = _read_log(page) if page else None
    try:
        yield
        _write_rows()
        if _deferred is None:
            _flush()
        else:
            _carry(_touched(), _deferred)
        if _latest_stamp is not None:
            hlc.observe(_latest_stamp[1], changes.origin_id())
    finally:
        _start_page()


@contextmanager
def totals_deferred() -> Iterator[None]:
    """Pages applied inside (in the caller's transaction) have their totals recomputed once,
    when the block ends: a customer of many pages once, not once a page (a catch-up's
    transaction of several pages, sync/worker.py CatchUp)."""
    global _deferred
    _deferred = tuple(type(touched)() for touched in _touched())
    try:
        yield
        _start_page()
        _carry(_deferred, _touched())
        _flush()
    finally:
        _deferred = None
        _start_page()


def _start_page() -> None:
    global _maybe_waiting, _latest_stamp, _log_view, _page_customers
    for touched in (*_touched(), _customers_held, _held_rows, _new_receipts):
        touched.clear()
    _latest_stamp = None
    _maybe_waiting = True
    _log_view = None
    _page_customers = None


def _touched() -> Touched:
    return (touched_sales, refunded_sales, new_sales, fed_sales, touched_customers,
            touched_totals)  # fmt: skip


def _carry(source: Touched, target: Touched) -> None:
    """Add what one set of pages touched to another's."""
    *sets, took, totals = source
    *into_sets, into_took, into_totals = target
    for touched, into in zip(sets, into_sets, strict=True):
        into.update(touched)
    for customer_id, change_id in took.items():
        into_took[customer_id] = into_took.get(customer_id) or change_id
    for customer_id, fed in totals.items():
        into_totals.setdefault(customer_id, set()).update(fed)


def _flush() -> None:
    """Recompute the totals of everything touched, and report overdrafts the merged facts
    reveal."""
    for sale_id in sorted(touched_sales - (new_sales - fed_sales)):
        customer_id = derive.sale(sale_id, with_customer=False)
        if customer_id is not None:
            touched_customers.setdefault(customer_id, None)
            touched_totals.setdefault(customer_id, set()).update(derive.FEEDS["sale"])
            if sale_id in refunded_sales:
                _report_over_refund(sale_id)
    by_totals: dict[tuple[str, ...], list[str]] = {}
    for customer_id in sorted(touched_customers):
        totals = tuple(sorted(touched_totals.get(customer_id, ())))
        by_totals.setdefault(totals, []).append(customer_id)
    for totals, ids in sorted(by_totals.items()):
        derive.customers(ids, totals or None)
    _report_overdrafts({c: took for c, took in touched_customers.items() if took is not None})


def _keep_one_reversal(row: dict[str, Any], change: dict[str, Any]) -> bool:
    """True to store this reversal: the entry has none yet, or this one is earlier (then
    the later one goes). The loser is reported; every node keeps the same one."""
    _write_rows()
    original = fetch_one(
        "SELECT customer_id, type, amount, reverses_id FROM ledger_entry WHERE id = ?",
        (row["reverses_id"],),
    )
    if original is None or original["reverses_id"] is not None or (
        original["customer_id"], original["amount"]) != (row["customer_id"], row["amount"]
    ) or original["type"] == row["type"]:  # fmt: skip
        raise ValueError(f"entry {row['id']} does not reverse {row['reverses_id']}: another "
                         "customer, amount or type, or a reversal of a reversal")  # fmt: skip
    held = fetch_one(
        "SELECT id, created_at FROM ledger_entry WHERE reverses_id = ?", (row["reverses_id"],)
    )
    if held is None:
        return True
    instant = datetime.fromisoformat  # Python 3.11 reads the Z
    if (instant(row["created_at"]), row["id"]) < (instant(held["created_at"]), held["id"]):
        execute("DELETE FROM ledger_entry WHERE id = ?", (held["id"],))
        loser = f"the reversal made at {held['created_at']}"
        keep = True
    else:
        loser = f"the reversal made at {row['created_at']}"
        keep = False
    report("double_reversal", f"entry {row['reverses_id']} was reversed at two shops; "
           f"kept the earlier reversal, dropped {loser}", change["id"])  # fmt: skip
    return keep


def _report_receipt_clashes() -> None:
    """Each new sale whose receipt number its shop had already issued to a sale stored
    before it (an earlier one of the page, or one held before the page)."""
    new = list(_new_receipts)
    _new_receipts.clear()
    later = {sale["id"] for sale, _ in new}
    holders: dict[tuple[str, str], list[str]] = {}
    by_origin: dict[str, set[str]] = {}
    for sale, _ in new:
        by_origin.setdefault(sale["origin"], set()).add(sale["receipt_number"])
    for origin, numbers in by_origin.items():
        for chunk in _chunks(sorted(numbers)):
            for row in fetch_all("SELECT id, receipt_number FROM sale WHERE origin = ? "
                                 f"AND receipt_number IN ({marks(chunk)})", (origin, *chunk)):
                holders.setdefault((origin, row["receipt_number"]), []).append(row["id"])
    for sale, change_id in new:
        later.discard(sale["id"])
        clash = next((held for held in holders[(sale["origin"], sale["receipt_number"])]
                      if held != sale["id"] and held not in later), None)  # fmt: skip
        if clash:
            detail = (f"receipt {sale['receipt_number']} was issued twice by one shop "
                      f"(sales {clash} and {sale['id']}), after a restore")  # fmt: skip
            report("receipt_reused", detail, change_id)


def _report_over_refund(sale_id: str) -> None:
    """Two shops refunding one sale offline: both refunds are kept (money moved at both
    tills); the excess is reported, once per sale."""
    sale = fetch_one("SELECT receipt_number, total - discount_amount AS paid, refunded_amount "
                     "FROM sale WHERE id = ?", (sale_id,))  # fmt: skip
    if sale["refunded_amount"] > sale["paid"] and not fetch_one(
        "SELECT 1 FROM sync_report WHERE kind = 'over_refund' AND change_id = ?", (sale_id,)
    ):
        report("over_refund", f"sale {sale['receipt_number']} was refunded "
               f"{sale['refunded_amount']} of {sale['paid']} paid, at two shops", sale_id)


def _report_overdrafts(took: dict[str, str]) -> None:
    """For each customer a merged change took something from (id -> that change's id)."""
    for chunk in _chunks(sorted(took)):
        for customer in fetch_all("SELECT id, ledger_balance, loyalty_points, credit_limit "
                                  f"FROM customer WHERE id IN ({marks(chunk)}) ORDER BY id",
                                  chunk):  # fmt: skip
            _report_overdraft(customer, took[customer["id"]])


def _report_overdraft(customer: dict[str, Any], change_id: str) -> None:
    customer_id = customer["id"]
    if customer["loyalty_points"] < 0:
        report("points_below_zero",
               f"customer {customer_id} has {customer['loyalty_points']} points after a merge",
               change_id)  # fmt: skip
    if customer["ledger_balance"] >= 0:
        return  # owes nothing: no limit to pass
    limit = credit_limit_for(customer)
    if limit is not None and -customer["ledger_balance"] > limit:
        report("credit_limit_exceeded",
               f"customer {customer_id} owes {-customer['ledger_balance']}, "
               f"past the credit limit {limit}, after a merge", change_id)  # fmt: skip
