"""The change log: every write that syncs, recorded in the same transaction as the write.

A change carries facts, never totals. A synced write runs inside `recording(kind)`, which
hands it a `Change`: it stores facts through `change.insert` (a row of an append-only table:
a customer, sale, refund, late discount, ledger entry or points event), notes profile fields
set (`change.set_fields`) or a customer deleted or anonymized (`change.tombstone`), and the
change is logged when the block ends, in the write's transaction. The body is what happened:

    customer.created      {"customer": [row]}
    customer.updated      {"customer_id": id, "fields": {field: value}}
    customer.deleted      {"customer_id": id, "created_at": t}     (a tombstone, forever)
    customer.anonymized   {"customer_id": id, "created_at": t}
    sale.recorded         {"sale": [row], "loyalty_event": [...], "ledger_entry": [...]}
    sale.refunded         {"refund": [row], "loyalty_event": [...], "ledger_entry": [...]}
    sale.discounted       {"sale_discount": [row], "loyalty_event": [...], "ledger_entry": [...]}
    loyalty.redeemed      {"loyalty_event": [row]}
    ledger.credit|debit|reversal   {"ledger_entry": [row]}

Which columns of a row are facts is marked on the models (node/models.py FACT_COLUMNS);
every node derives balances, points and sale counters from the facts it holds with its own
code (node/derive.py), so no change can move a total by itself. sync/protocol.py validates
each kind's shape on both sides of the wire. Each change gets a UUIDv7, this node's origin
id, the next gap-free per-origin sequence number and a hybrid-logical-clock timestamp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson

from node import derive, hlc
from node.clock import now_iso, uuid7, uuid7s
from node.db import execute, fetch_all, fetch_one, get_meta, insert_row, insert_rows, savepoint
from node.errors import Invalid
from node.models import PROFILE_COLUMNS, SCRUBBED
from sync.protocol import MAX_BODY_BYTES, ProtocolError, check_body

TOMBSTONE_KINDS = ("customer.deleted", "customer.anonymized")


def store_fact(table: str, fact: dict[str, Any]) -> None:
    """INSERT one fact with the local columns it implies (no change recorded: merge uses
    this too, so a fact is stored the same way wherever it was made). Hand-written SQL, like
    the change log's: catch-up stores every fact through it (bench/sync.py, node/db.py)."""
    insert_row(table, fact_row(table, fact))


def fact_row(table: str, fact: dict[str, Any]) -> dict[str, Any]:
    """A fact's row as stored: the fact plus the local columns it implies (merge stores a
    pulled page's facts through this too, a table at a time)."""
    row = dict(fact)
    if table == "customer":
        row["phone_digits"] = derive.phone_digits(row.get("phone"))
        row["updated_at"] = row["created_at"]
    elif table == "sale":
        # The till's values stay as facts; the live columns add late discounts (derive.py).
        row["till_discount_amount"] = row["discount_amount"]
        row["till_points_earned"] = row["points_earned"]
        row["till_points_redeemed"] = row["points_redeemed"]
    return row


class Change:
    """One synced write being recorded (see recording()): its facts, fields or tombstone.
    `kind` and `entity_id` may be set once known, before the block ends."""

    def __init__(
        self, kind: str | None, entity_id: str | None, change_id: str | None = None
    ) -> None:
        self.id = change_id or uuid7()
        self.kind = kind
        self.entity_id = entity_id
        self.body: dict[str, Any] = {}

    def insert(self, table: str, fact: dict[str, Any]) -> None:
        """Store a new fact, note it in the change and bring derived totals up to date."""
        store_fact(table, fact)
        self.body.setdefault(table, []).append(fact)
        derive.after_fact(table, fact)

    def set_fields(self, customer_id: str, fields: dict[str, Any]) -> None:
        """Note profile fields the caller has just set (merged last-writer-wins elsewhere)."""
        self.body.update(customer_id=customer_id, fields=fields)

    def tombstone(self, customer_id: str, created_at: str) -> None:
        """Note that the caller has deleted or anonymized this customer, for good."""
        self.body.update(customer_id=customer_id, created_at=created_at)


@contextmanager
def recording(kind: str | None = None, entity_id: str | None = None) -> Iterator[Change]:
    """A transaction whose synced writes become one change, logged when the block ends
    without an exception."""
    change = Change(kind, entity_id)
    with savepoint():
        yield change
        _log(change)


class NewFact(NamedTuple):
    """A new fact made ready to store and log as a change of its own (new_facts), before
    the transaction that records it (record_each) numbers, stamps and writes it."""

    fact: dict[str, Any]
    row: dict[str, Any]  # as stored (fact_row)
    change_id: str
    body: str  # its change's body, encoded
    refused: Invalid | None  # why central would refuse its change (unsyncable)


def new_facts(kind: str, table: str, facts: list[dict[str, Any]]) -> list[NewFact]:
    """Each fact as `recording(kind, fact["id"])` with one `change.insert` would store and
    log it, checked as it does (`refused`); made outside any transaction (CSV import: in the
    thread that reads the file)."""
    made = []
    for fact, change_id in zip(facts, uuid7s(len(facts)), strict=True):
        body = encode_body({table: [fact]})
        made.append(NewFact(fact, fact_row(table, fact), change_id, body,
                            unsyncable(kind, fact["id"], body)))  # fmt: skip
    return made


def record_each(kind: str, table: str, facts: list[NewFact]) -> None:
    """Store new facts, each logged as a change of its own (entity: the fact's id), in the
    caller's transaction, in a few statements per table for all (CSV import: thousands per
    transaction). Nothing of them if central would refuse one (leave those out first)."""
    if not facts:
        return
    refused = next((new.refused for new in facts if new.refused is not None), None)
    if refused is not None:
        raise refused
    insert_rows(table, [new.row for new in facts])
    for new in facts:
        derive.after_fact(table, new.fact)
    origin = origin_id()
    first = _next_seq(origin)
    stamps = hlc.ticks(origin, len(facts))
    recorded_at = now_iso()
    insert_rows("change_log", [
        _entry(Change(kind, new.fact["id"], new.change_id), origin, first + i, stamp,
               recorded_at, new.body)
        for i, (new, stamp) in enumerate(zip(facts, stamps, strict=True))
    ])  # fmt: skip


def origin_id() -> str:
    origin = get_meta("origin_id")
    if origin is None:
        raise RuntimeError("node identity missing: open the database with open_database()")
    return origin


def previous_origins() -> list[str]:
    """Origin ids this node used before a restore made it take a new one."""
    return json.loads(get_meta("previous_origin_ids") or "[]")


def shop_origins() -> list[str]:
    """Every origin id this shop has written under (receipt numbers span them all)."""
    return [origin_id(), *previous_origins()]


# Fields of a change's rows that requests set by these names; any other is the node's own.
_REQUEST_FIELDS = {*PROFILE_COLUMNS, "amount", "description", "reference_id", "total",
                   "payment_method"}  # fmt: skip


def unsyncable(kind: str, entity_id: str, body: str) -> Invalid | None:
    """Why central would refuse a change with this body (sync/protocol.py: its size and
    check_body, on the text as it will be pushed), as the field to blame; None if it would
    take it. The API and import validate first; this is the last word, because a change
    central refuses stops every later push of the shop for good."""
    if len(body) > MAX_BODY_BYTES:
        return Invalid([("body", f"is {len(body):,} characters as a change, over the "
                                 f"{MAX_BODY_BYTES:,} every shop can take")])  # fmt: skip
    try:
        check_body(kind, entity_id, orjson.loads(body))
    except orjson.JSONDecodeError as exc:  # e.g. a lone surrogate, escaped
        return Invalid([("body", f"is not JSON text every shop can read ({exc})")])
    except ProtocolError as exc:
        name = re.sub(r"\[\d+\]", "", exc.field).rsplit(".", 1)[-1]
        if name not in _REQUEST_FIELDS:  # not a field the request named: say where it is
            return Invalid([("body", f"{exc}: not a value every shop can take")])
        return Invalid([(name, f"{exc.message}: not a value every shop can take")])
    return None


def _log(change: Change) -> dict[str, Any]:
    if not (change.kind and change.entity_id and change.body):
        raise RuntimeError(f"a {change.kind} change without an entity or anything recorded")
    body = encode_body(change.body)
    refused = unsyncable(change.kind, change.entity_id, body)
    if refused is not None:
        raise refused  # the caller's savepoint rolls back what it wrote
    origin = origin_id()
    seq = _next_seq(origin)
    stamp = hlc.tick(origin, after=_latest_field_clock(change.body))
    logged = _entry(change, origin, seq, stamp, now_iso(), body)
    insert_change(logged)
    if "fields" in change.body:
        set_field_clocks(change.body["customer_id"], change.body["fields"], stamp)
    return logged


def _next_seq(origin: str) -> int:
    row = fetch_one(
        "SELECT COALESCE(MAX(origin_seq), 0) + 1 AS seq FROM change_log WHERE origin = ?",
        (origin,),
    )
    return row["seq"]


def _entry(change: Change, origin: str, seq: int, stamp: str, recorded_at: str,
           body: str) -> dict[str, Any]:  # fmt: skip
    """The change log's row of a change (`body`: its body already encoded)."""
    return {
        "id": change.id,
        "origin": origin,
        "origin_seq": seq,
        "hlc": stamp,
        "kind": change.kind,
        "entity_id": change.entity_id,
        "body": body,
        "recorded_at": recorded_at,
    }


def insert_change(change: dict[str, Any]) -> None:
    insert_row("change_log", change)


def _latest_field_clock(body: dict[str, Any]) -> str | None:
    if "fields" not in body:
        return None
    fields = body["fields"]
    rows = fetch_all(
        f"SELECT hlc FROM customer_field_clock WHERE customer_id = ? "
        f"AND field IN ({', '.join('?' for _ in fields)})",
        (body["customer_id"], *fields),
    )
    return max((r["hlc"] for r in rows), key=hlc.decode, default=None)


def set_field_clocks(customer_id: str, fields: dict[str, Any], stamp: str) -> None:
    for field in fields:
        execute(
            "INSERT INTO customer_field_clock(customer_id, field, hlc) VALUES (?, ?, ?) "
            "ON CONFLICT(customer_id, field) DO UPDATE SET hlc = excluded.hlc",
            (customer_id, field, stamp),
        )


def scrub_body(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A change body with the customer's personal data blanked (for tombstoned customers)."""
    body = json.loads(json.dumps(body))
    if kind == "customer.created":
        for row in body.get("customer", []):
            row.update({f: value for f, value in SCRUBBED.items() if f in row})
    elif kind == "customer.updated" and isinstance(body.get("fields"), dict):
        fields = body["fields"]
        fields.update({f: value for f, value in SCRUBBED.items() if f in fields})
    return body


def scrubbed_text(kind: str, text: str) -> str:
    """The stored text of a change body once its customer is tombstoned."""
    if kind not in ("customer.created", "customer.updated"):
        return text
    return encode_body(scrub_body(kind, json.loads(text)))


def same_change(kind: str, held: str, other: str) -> bool:
    """Two copies of one change's body: equal, or equal once the customer's personal data
    is blanked in both, when either copy has already been scrubbed by a tombstone."""
    if held == other:
        return True
    scrubbed_held, scrubbed_other = scrubbed_text(kind, held), scrubbed_text(kind, other)
    either_scrubbed = held == scrubbed_held or other == scrubbed_other
    return either_scrubbed and scrubbed_held == scrubbed_other


_BODY = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # json.dumps makes one a call


def encode_body(body: dict[str, Any]) -> str:
    return _BODY.encode(body)


def scrub_logged_changes(customer_id: str) -> None:
    """Blank the customer's personal data in this node's copies of changes: the change log
    and changes still waiting for a prerequisite."""
    for row in fetch_all(
        "SELECT id, kind, body FROM change_log WHERE entity_id = ? "
        "AND kind IN ('customer.created', 'customer.updated')",
        (customer_id,),
    ):
        execute("UPDATE change_log SET body = ? WHERE id = ?",
                (scrubbed_text(row["kind"], row["body"]), row["id"]))  # fmt: skip
    for row in fetch_all(
        "SELECT change_id, change FROM sync_pending WHERE entity_id = ?", (customer_id,)
    ):
        change = json.loads(row["change"])
        change["body"] = scrubbed_text(change["kind"], change["body"])
        execute("UPDATE sync_pending SET change = ? WHERE change_id = ?",
                (json.dumps(change), row["change_id"]))  # fmt: skip


def tombstoned(customer_id: str) -> bool:
    return fetch_one("SELECT 1 FROM tombstone WHERE customer_id = ?", (customer_id,)) is not None


def add_tombstone(customer_id: str, kind: str, created_at: str | None, change_id: str) -> None:
    execute(
        "INSERT INTO tombstone(customer_id, kind, created_at, change_id, recorded_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(customer_id) DO NOTHING",
        (customer_id, kind, created_at, change_id, now_iso()),
    )
