"""The /sync/v1 wire protocol, shared by the worker (node side) and the central node.

push  POST /sync/v1/push   {"origin": ORIGIN, "changes": [CHANGE, ...], "acked": N, "epoch": E}
      -> {"acked_seq": N, "conflicts": [change id, ...], "reused": [change id, ...],
          "epoch": E}
      N is the highest contiguous sequence central holds for ORIGIN; `conflicts` are ids
      central holds with another body (quarantined); `reused` are changes whose sequence
      central holds under another id (the sender was restored from an old backup).
      `acked`/`epoch` (optional) say what the sender believes central holds: more than
      central has, in the same epoch, means central was restored and takes a new epoch.
pull  GET  /sync/v1/pull?after=CURSOR&after_id=ID&epoch=E&limit=N&origin=ORIGIN
      -> {"changes": [CHANGE + "cursor", ...], "next": CURSOR, "next_id": ID, "more": bool,
          "high": CURSOR, "reset": bool, "epoch": E}
      Changes of every origin but ORIGIN, in central commit order. `reset`: the cursor
      belongs to another epoch of central's history: start again from 0 (applying is
      idempotent).

CHANGE = {"id", "origin", "origin_seq", "hlc", "kind", "entity_id", "body", "recorded_at"},
with `body` the origin's exact JSON text, so "same change" is a byte comparison. A body
carries one fact of its kind (node/changes.py lists them, node/models.py marks their
columns); `check_change` checks every field of it, on both sides. Bodies may be
gzip-compressed (Content-Encoding: gzip).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from node.models import (
    ENTRY_TYPES,
    FACT_COLUMNS,
    PAYMENT_METHODS,
    POINTS_KINDS,
    PROFILE_COLUMNS,
)
from node.money import MAX_AMOUNT

PUSH_PATH = "/sync/v1/push"
PULL_PATH = "/sync/v1/pull"
STATUS_PATH = "/sync/v1/status"

# A batch stops at whichever comes first.
MAX_BATCH_CHANGES = 500
MAX_BATCH_BYTES = 1024 * 1024
MAX_PULL_LIMIT = 1000
MAX_BODY_BYTES = 64 * 1024
# Money and points in one fact: what the node's API accepts (node/money.py), so sums of
# millions of facts stay far inside SQLite's 64-bit integers.
MAX_INT = MAX_AMOUNT

CHANGE_FIELDS = ("id", "origin", "origin_seq", "hlc", "kind", "entity_id", "body", "recorded_at")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HLC = re.compile(r"(\d{15})-(\d{6})-(" + _UUID.pattern + ")")
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


class ProtocolError(ValueError):
    """A malformed sync message; `field` names where (e.g. `body.ledger_entry[0].amount`)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


# -- field checks: each returns the value or raises ValueError with a message -------------
Check = Callable[[Any], Any]


def uuid_text(value: Any) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValueError("must be a lower-case UUID")
    return value


def instant(value: Any) -> str:
    if not isinstance(value, str) or not _INSTANT.fullmatch(value):
        raise ValueError("must be an RFC 3339 UTC time like 2025-06-01T10:00:00.000Z")
    try:
        datetime.fromisoformat(value)  # Python 3.11 reads the Z
    except ValueError:
        raise ValueError("is not a real calendar time") from None
    return value


def hlc_stamp(value: Any) -> str:
    if not isinstance(value, str) or not _HLC.fullmatch(value):
        raise ValueError("must be a clock stamp WWWWWWWWWWWWWWW-CCCCCC-ORIGIN")
    return value


def text(min_len: int = 0, max_len: int = 200) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not min_len <= len(value) <= max_len:
            raise ValueError(f"must be text of {min_len} to {max_len} characters")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate
                raise ValueError("must be valid Unicode text") from None
        if "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    return check


def integer(minimum: int = -MAX_INT, maximum: int = MAX_INT) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int:  # JSON gives exactly int; True is not a number here
            raise ValueError("must be an integer")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def nullable(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def tags_json(value: Any) -> str:
    """Tags as stored: the JSON text of a list of short strings (non-ASCII escaped)."""
    text(max_len=20 * 50 * 6 + 100)(value)
    try:
        tags = json.loads(value)
    except ValueError:
        raise ValueError("must be a JSON list of strings") from None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise ValueError("must be a JSON list of strings")
    for tag in tags:
        text(1, 50)(tag)
    return value


def nonzero(value: Any) -> int:
    if integer()(value) == 0:
        raise ValueError("must not be 0")
    return value


# -- the facts ------------------------------------------------------------------------------
PROFILE: dict[str, Check] = {
    "name": text(1, 200),
    "email": nullable(text(3, 254)),
    "phone": nullable(text(1, 40)),
    "address": nullable(text(0, 500)),
    "notes": nullable(text(0, 2000)),
    "tags": tags_json,
    "credit_limit": nullable(integer(0)),
}
ROWS: dict[str, dict[str, Check]] = {
    "customer": {"id": uuid_text, **PROFILE, "created_at": instant},
    "sale": {
        "id": uuid_text, "origin": uuid_text, "customer_id": uuid_text,
        "receipt_number": text(1, 50), "total": integer(1), "discount_amount": integer(0),
        "payment_method": one_of(*PAYMENT_METHODS), "points_earned": integer(0),
        "points_redeemed": integer(0), "created_at": instant,
    },
    "refund": {
        "id": uuid_text, "sale_id": uuid_text, "amount": integer(0),
        "points_reversed": integer(0), "points_shortfall": integer(0),
        "points_restored": integer(0), "created_at": instant,
    },
    "sale_discount": {
        "id": uuid_text, "sale_id": uuid_text, "discount_amount": integer(0),
        "points_redeemed": integer(0), "points_not_earned": integer(0), "created_at": instant,
    },
    "ledger_entry": {
        "id": uuid_text, "customer_id": uuid_text, "type": one_of(*ENTRY_TYPES),
        "amount": integer(1), "description": text(0, 500),
        "reference_id": nullable(text(1, 100)), "reverses_id": nullable(uuid_text),
        "created_at": instant,
    },
    "loyalty_event": {
        "id": uuid_text, "customer_id": uuid_text,
        "kind": one_of(*POINTS_KINDS), "points": nonzero,
        "sale_id": nullable(uuid_text), "description": text(0, 500), "created_at": instant,
    },
}  # fmt: skip
# Each row checks exactly the columns the models mark as facts (in the protocol's own order:
# a bad row reports its first bad field in this order).
assert ROWS.keys() == FACT_COLUMNS.keys(), "ROWS and the fact tables differ"
assert all(ROWS[t].keys() == set(FACT_COLUMNS[t]) for t in ROWS), "ROWS and FACT_COLUMNS differ"
assert tuple(PROFILE) == PROFILE_COLUMNS, "PROFILE and PROFILE_COLUMNS differ"

# Each kind: how many rows of which facts (min, max), and what the entity id names.
FACTS: dict[str, dict[str, tuple[int, int]]] = {
    "customer.created": {"customer": (1, 1)},
    "sale.recorded": {"sale": (1, 1), "loyalty_event": (0, 2), "ledger_entry": (0, 1)},
    "sale.refunded": {"refund": (1, 1), "loyalty_event": (0, 2), "ledger_entry": (0, 1)},
    "loyalty.redeemed": {"loyalty_event": (1, 2), "sale_discount": (0, 1),
                         "ledger_entry": (0, 1)},
    "ledger.credit": {"ledger_entry": (1, 1)},
    "ledger.debit": {"ledger_entry": (1, 1)},
    "ledger.reversal": {"ledger_entry": (1, 1)},
}  # fmt: skip
PROFILE_KINDS = ("customer.updated", "customer.deleted", "customer.anonymized")
KINDS = (*FACTS, *PROFILE_KINDS)


def _check_row(table: str, row: Any, index: int) -> dict[str, Any]:
    shape = ROWS[table]
    if row.__class__ is not dict or row.keys() != shape.keys():
        where = f"body.{table}[{index}]"
        if not isinstance(row, dict):
            raise ProtocolError("must be an object", where)
        missing = [field for field in shape if field not in row]
        if missing:
            raise ProtocolError("is required", f"{where}.{missing[0]}")
        extra = sorted(set(row) - set(shape))
        raise ProtocolError(f"is not a field of a {table} (a change carries facts, never "
                            "totals)", f"{where}.{extra[0]}")  # fmt: skip
    for field, check in shape.items():
        try:
            check(row[field])
        except ValueError as exc:
            raise ProtocolError(str(exc), f"body.{table}[{index}].{field}") from None
    return row


def check_body(kind: str, entity_id: str, body: Any) -> dict[str, Any]:
    """A change body of `kind`, checked field by field, or ProtocolError naming the field."""
    if not isinstance(body, dict):
        raise ProtocolError("must be an object", "body")
    if kind in PROFILE_KINDS:
        return _check_profile_change(kind, entity_id, body)
    counts = FACTS.get(kind)
    if counts is None:
        raise ProtocolError(f"unknown kind; one of {', '.join(KINDS)}", "kind")
    if not body.keys() <= counts.keys():
        raise ProtocolError(f"a {kind} carries only {', '.join(counts)}", "body")
    for table, (low, high) in counts.items():
        rows = body.get(table, [])
        if not isinstance(rows, list) or not low <= len(rows) <= high:
            raise ProtocolError(f"must be a list of {low} to {high} rows", f"body.{table}")
        for index, row in enumerate(rows):
            _check_row(table, row, index)
    _check_links(kind, entity_id, body)
    return body


def _check_profile_change(kind: str, entity_id: str, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("customer_id") != entity_id:
        raise ProtocolError("must be the change's entity_id", "body.customer_id")
    if kind == "customer.updated":
        if set(body) != {"customer_id", "fields"}:
            raise ProtocolError("a customer.updated carries customer_id and fields", "body")
        fields = body["fields"]
        if not isinstance(fields, dict) or not fields or set(fields) - set(PROFILE_COLUMNS):
            raise ProtocolError(f"must set some of {', '.join(PROFILE_COLUMNS)}", "body.fields")
        for field, value in fields.items():
            try:
                PROFILE[field](value)
            except ValueError as exc:
                raise ProtocolError(str(exc), f"body.fields.{field}") from None
        return body
    if set(body) - {"customer_id", "created_at"}:
        raise ProtocolError(f"a {kind} carries customer_id and created_at", "body")
    if body.get("created_at") is not None:
        try:
            instant(body["created_at"])
        except ValueError as exc:
            raise ProtocolError(str(exc), "body.created_at") from None
    return body


def _check_links(kind: str, entity_id: str, body: dict[str, Any]) -> None:
    """Rows of one change belong together: one customer, the change's own sale or entry."""
    main = _MAIN[kind]
    if kind != "loyalty.redeemed" and body[main][0]["id"] != entity_id:
        raise ProtocolError("must be the change's entity_id", f"body.{main}[0].id")
    customer = entity_id if kind == "loyalty.redeemed" else None
    sale = None
    for table in FACTS[kind]:
        for row in body.get(table, ()):
            row_customer, row_sale = row.get("customer_id"), row.get("sale_id")
            if row_customer is not None:
                customer = customer or row_customer
                if row_customer != customer:
                    raise ProtocolError("every row of one change is for one customer", "body")
            if row_sale:
                if kind == "sale.recorded" and row_sale != entity_id:
                    raise ProtocolError("points events of a sale name that sale",
                                        "body.loyalty_event")  # fmt: skip
                sale = sale or row_sale
                if row_sale != sale:
                    raise ProtocolError("every row of one change is about one sale", "body")
    for row in body.get("ledger_entry", ()):
        if (row["reverses_id"] is not None) != (kind == "ledger.reversal"):
            raise ProtocolError("only a ledger.reversal reverses an entry",
                                "body.ledger_entry[0].reverses_id")  # fmt: skip


_MAIN = {kind: next(iter(tables)) for kind, tables in FACTS.items()}  # what the entity id names
_CHANGE_FIELD_SET = set(CHANGE_FIELDS)
_PULLED_FIELD_SET = {*CHANGE_FIELDS, "cursor"}
_CHANGE_CHECKS: dict[str, Check] = {
    "id": uuid_text, "origin": uuid_text, "origin_seq": integer(1), "hlc": hlc_stamp,
    "kind": one_of(*KINDS), "entity_id": uuid_text, "body": text(2, MAX_BODY_BYTES),
    "recorded_at": instant,
}  # fmt: skip


def check_change(change: Any) -> dict[str, Any]:
    """A change with exactly the expected fields, types and fact shape, or ProtocolError."""
    return checked_change(change)[0]


def checked_change(change: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """check_change, with the body it parsed (a node applying the change reuses it)."""
    if not isinstance(change, dict) or (change.keys() != _CHANGE_FIELD_SET
                                        and change.keys() != _PULLED_FIELD_SET):  # fmt: skip
        raise ProtocolError(f"a change needs exactly the fields {', '.join(CHANGE_FIELDS)}")
    for field, check in _CHANGE_CHECKS.items():
        try:
            check(change[field])
        except ValueError as exc:
            raise ProtocolError(str(exc), field) from None
    try:
        body = orjson.loads(change["body"])
    except (ValueError, RecursionError):
        raise ProtocolError("must be JSON text", "body") from None
    check_body(change["kind"], change["entity_id"], body)
    if len(change) != len(CHANGE_FIELDS):
        change = {f: change[f] for f in CHANGE_FIELDS}
    return change, body


def gzip_json(payload: Any) -> bytes:
    return gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), compresslevel=5)


def batches(changes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split changes into batches bounded by count and bytes."""
    result: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for change in changes:
        weight = len(change["body"]) + 200
        if current and (len(current) >= MAX_BATCH_CHANGES or size + weight > MAX_BATCH_BYTES):
            result.append(current)
            current, size = [], 0
        current.append(change)
        size += weight
    if current:
        result.append(current)
    return result
