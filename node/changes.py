"""The change log: every write that syncs, recorded in the same transaction as the write.

Domain code writes synced tables only through `insert`, `add` and `set_fields`, then closes
the write with `log_change(kind, entity_id)`. The change body is what those calls did:

    {"rows": [[table, row], ...],             # new rows of append-only tables
     "adds": [[table, id, {column: delta}]],  # additions to running totals (they commute)
     "fields": [customer_id, {field: value}], # profile edits, last-writer-wins per field
     "scrub": customer_id}                    # anonymization or deletion

so one mechanism replays any kind of change on another node (sync/merge.py). Each change
gets a UUIDv7, this node's origin id, the next gap-free per-origin sequence number and a
hybrid-logical-clock timestamp.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from node import hlc
from node.db import database, execute, fetch_all, fetch_one, get_meta
from node.ids import now, now_iso, uuid7

# What a change body may write: these tables and columns only (checked before applying a
# remote change, since table and column names end up in SQL text).
SYNCED_COLUMNS = {
    "customer": ("id", "name", "email", "phone", "phone_digits", "address", "notes", "tags",
                 "credit_limit", "created_at", "updated_at"),
    "sale": ("id", "origin", "customer_id", "receipt_number", "total", "discount_amount",
             "payment_method", "points_earned", "points_redeemed", "created_at"),
    "refund": ("id", "sale_id", "amount", "points_reversed", "points_shortfall",
               "points_restored", "created_at"),
    "ledger_entry": ("id", "customer_id", "type", "amount", "description", "reference_id",
                     "reverses_id", "created_at"),
    "loyalty_event": ("id", "customer_id", "kind", "points", "sale_id", "description",
                      "created_at"),
}  # fmt: skip
PROFILE_COLUMNS = ("name", "email", "phone", "address", "notes", "tags", "credit_limit")
COUNTERS = {
    "customer": ("ledger_balance", "loyalty_points", "total_spent", "total_orders"),
    "sale": ("discount_amount", "points_redeemed", "refunded_amount", "points_reversed",
             "points_restored", "points_earned"),
}  # fmt: skip

# Sync progress, kept in the meta table: the highest of our sequences central holds, and
# the central cursor of the last page of others' changes applied.
ACKED = "sync_push_acked"
CURSOR = "sync_pull_cursor"
CURSOR_ID = "sync_pull_cursor_id"  # the id of the change at the cursor, to detect a restore

_pending = threading.local()


def _body() -> dict[str, Any]:
    if getattr(_pending, "body", None) is None:
        _pending.body = {}
    return _pending.body


def check_body(body: Any) -> dict[str, Any]:
    """A remote change body that writes only synced tables and columns, or ValueError."""

    def scalar(value: Any) -> bool:
        return value is None or isinstance(value, str | int) and not isinstance(value, bool)

    if not isinstance(body, dict) or set(body) - {"rows", "adds", "fields", "scrub"}:
        raise ValueError("a change body has only rows, adds, fields and scrub")
    for item in body.get("rows", []):
        table, row = item
        allowed = SYNCED_COLUMNS.get(table)
        if allowed is None or not isinstance(row, dict) or set(row) - set(allowed):
            raise ValueError(f"rows may not write {table!r} or these columns")
        if not isinstance(row.get("id"), str) or not all(map(scalar, row.values())):
            raise ValueError("a row needs a string id and scalar values")
    for item in body.get("adds", []):
        table, row_id, deltas = item
        allowed = COUNTERS.get(table, ())
        if not isinstance(row_id, str) or not isinstance(deltas, dict) or not deltas:
            raise ValueError("an add names a row id and its deltas")
        if set(deltas) - set(allowed) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in deltas.values()
        ):
            raise ValueError(f"adds may only add integers to running totals of {table!r}")
    if "fields" in body:
        customer_id, fields = body["fields"]
        if not isinstance(customer_id, str) or not isinstance(fields, dict) or \
                set(fields) - set(PROFILE_COLUMNS) or not all(map(scalar, fields.values())):
            raise ValueError("fields may only set customer profile fields")  # fmt: skip
    if "scrub" in body and not isinstance(body["scrub"], str):
        raise ValueError("scrub names a customer id")
    return body


def insert_row(table: str, row: dict[str, Any]) -> None:
    """INSERT a row of a synced table (no change recorded: sync/merge uses this)."""
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    execute(f"INSERT INTO {table}({columns}) VALUES ({marks})", tuple(row.values()))


def add_to_row(table: str, row_id: str, deltas: dict[str, int]) -> None:
    """Add to running totals of a row (no change recorded: sync/merge uses this)."""
    for column in deltas:
        if column not in COUNTERS[table]:
            raise ValueError(f"{table}.{column} is not a running total")
    assignments = ", ".join(f"{c} = {c} + ?" for c in deltas)
    execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*deltas.values(), row_id))


def insert(table: str, row: dict[str, Any]) -> None:
    """Insert a new row and note it in the pending change."""
    insert_row(table, row)
    _body().setdefault("rows", []).append([table, row])


def add(table: str, row_id: str, **deltas: int) -> None:
    """Add to running totals and note it in the pending change."""
    deltas = {c: d for c, d in deltas.items() if d}
    if not deltas:
        return
    add_to_row(table, row_id, deltas)
    _body().setdefault("adds", []).append([table, row_id, deltas])


def note_fields(customer_id: str, fields: dict[str, Any]) -> None:
    """Note profile fields the caller has just set (merged last-writer-wins elsewhere)."""
    _body()["fields"] = [customer_id, fields]


def note_scrub(customer_id: str) -> None:
    """Note that the caller has anonymized or deleted this customer."""
    _body()["scrub"] = customer_id


@contextmanager
def recording() -> Iterator[None]:
    """A transaction whose synced writes become one change; end it with log_change()."""
    outer = getattr(_pending, "body", None)
    _pending.body = {}
    try:
        with database.atomic():
            yield
            if _pending.body:
                raise RuntimeError("synced rows written without log_change()")
    finally:
        _pending.body = outer


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


def log_change(kind: str, entity_id: str) -> dict[str, Any]:
    """Write the pending change to the log; call last, inside the write's transaction."""
    body = _body()
    _pending.body = None
    origin = origin_id()
    row = fetch_one(
        "SELECT COALESCE(MAX(origin_seq), 0) + 1 AS seq FROM change_log WHERE origin = ?",
        (origin,),
    )
    stamp = hlc.tick(origin, after=_latest_field_clock(body))
    change = {
        "id": uuid7(),
        "origin": origin,
        "origin_seq": row["seq"],
        "hlc": stamp,
        "kind": kind,
        "entity_id": entity_id,
        "body": encode_body(body),
        "recorded_at": now_iso(),
    }
    insert_row("change_log", change)
    if "fields" in body:
        set_field_clocks(body["fields"][0], body["fields"][1], stamp)
    return change


def _latest_field_clock(body: dict[str, Any]) -> str | None:
    if "fields" not in body:
        return None
    customer_id, fields = body["fields"]
    marks = ", ".join("?" for _ in fields)
    row = fetch_one(
        f"SELECT MAX(hlc) AS hlc FROM customer_field_clock WHERE customer_id = ? "
        f"AND field IN ({marks})",
        (customer_id, *fields),
    )
    return row["hlc"] if row else None


def set_field_clocks(customer_id: str, fields: dict[str, Any], stamp: str) -> None:
    for field in fields:
        execute(
            "INSERT INTO customer_field_clock(customer_id, field, hlc) VALUES (?, ?, ?) "
            "ON CONFLICT(customer_id, field) DO UPDATE SET hlc = excluded.hlc",
            (customer_id, field, stamp),
        )


PERSONAL_FIELDS = ("name", "email", "phone", "phone_digits", "address", "notes", "tags")
SCRUBBED = {"name": "Deleted customer", "tags": "[]"}


def scrub_body(body: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """A change body with the customer's personal data blanked (for anonymization)."""
    body = json.loads(json.dumps(body))
    for table, row in body.get("rows", []):
        if table == "customer" and row["id"] == customer_id:
            for field in PERSONAL_FIELDS:
                if field in row:
                    row[field] = SCRUBBED.get(field)
    fields = body.get("fields")
    if fields and fields[0] == customer_id:
        for field in fields[1]:
            if field in PERSONAL_FIELDS:
                fields[1][field] = SCRUBBED.get(field)
    return body


def same_change(held: str, other: str, customer_id: str) -> bool:
    """Two copies of one change's body: equal, or equal once the customer's personal data
    is blanked in both, when either copy has already been scrubbed by an anonymization."""
    if held == other:
        return True
    scrubbed_held = encode_body(scrub_body(json.loads(held), customer_id))
    scrubbed_other = encode_body(scrub_body(json.loads(other), customer_id))
    either_scrubbed = held == scrubbed_held or other == scrubbed_other
    return either_scrubbed and scrubbed_held == scrubbed_other


def encode_body(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def scrub_logged_changes(customer_id: str) -> None:
    """Blank the customer's personal data in this node's own copy of the change log."""
    rows = fetch_all(
        "SELECT id, body FROM change_log WHERE entity_id = ? "
        "AND kind IN ('customer.created', 'customer.updated')",
        (customer_id,),
    )
    for row in rows:
        scrubbed = encode_body(scrub_body(json.loads(row["body"]), customer_id))
        execute("UPDATE change_log SET body = ? WHERE id = ?", (scrubbed, row["id"]))


def queue_status() -> dict[str, Any]:
    """Push queue depth, age of the oldest unsent change, pull cursor, sync reports."""
    origin = origin_id()
    acked = int(get_meta(ACKED) or 0)
    queue = fetch_one(
        "SELECT COUNT(*) AS n, MIN(recorded_at) AS oldest FROM change_log "
        "WHERE origin = ? AND origin_seq > ?",
        (origin, acked),
    )
    oldest_age = None
    if queue["oldest"]:
        oldest = datetime.fromisoformat(queue["oldest"].replace("Z", "+00:00"))
        oldest_age = round((now() - oldest).total_seconds(), 1)
    counts = fetch_all("SELECT kind, COUNT(*) AS n FROM sync_report GROUP BY kind")
    return {
        "origin": origin,
        "push_queue_depth": queue["n"],
        "oldest_unsent_age_seconds": oldest_age,
        "push_acked_seq": acked,
        "pull_cursor": int(get_meta(CURSOR) or 0),
        "reports": {r["kind"]: r["n"] for r in counts},
        "recent_reports": fetch_all(
            "SELECT kind, change_id, detail, created_at FROM sync_report ORDER BY id DESC LIMIT 20"
        ),
    }
