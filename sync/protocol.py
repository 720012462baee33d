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

import functools
import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
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
        self.message = message


# -- field rules ----------------------------------------------------------------------------
# A rule is declared once, as steps: a condition on the value `v` (a Python expression) and
# what is wrong when it fails. Calling a rule checks one value (ValueError with the first
# failed step's message: a refused change names its field and why); the compiled validators
# below inline the conditions of every field of a change, so a good change is checked
# without a call per field (central checks every change it takes, a node every one it
# applies), and a change they refuse is checked again rule by rule for the message.
Step = tuple[str, str]


def _real_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)  # Python 3.11 reads the Z
    except ValueError:
        return False
    return True


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


@functools.lru_cache(maxsize=256)  # a shop's few tag sets, over and over
def _tag_list(value: str) -> tuple[str, ...] | None:
    """Tags as stored, read: a JSON list of non-empty strings, or None."""
    try:
        tags = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        return None
    return tuple(tags)


# What conditions may name besides builtins.
_NAMES: dict[str, Any] = {"_uuid": _UUID.fullmatch, "_hlc": _HLC.fullmatch,
                          "_instant": _INSTANT.fullmatch, "_real_time": _real_time,
                          "_unicode": _unicode, "_tag_list": _tag_list}  # fmt: skip


def _compiled(source: list[str], name: str, **names: Any) -> Callable[..., Any]:
    """A function built from generated source lines (with _NAMES and `names` in scope)."""
    namespace = {**_NAMES, **names}
    exec("\n".join(source), namespace)  # source built here, from the rules' steps only
    return namespace[name]


class Rule:
    """One field's rule: its steps; calling it checks a value and returns it."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.condition = " and ".join(f"({test})" for test, _ in steps)
        source = ["def check(v):"]
        for index, (test, _) in enumerate(steps):
            source += [f"    if not ({test}):", f"        raise ValueError(messages[{index}])"]
        self._check = _compiled([*source, "    return v"], "check",
                                messages=tuple(message for _, message in steps))

    def __call__(self, value: Any) -> Any:
        return self._check(value)


def _pattern(name: str, message: str) -> Rule:
    return Rule((f"isinstance(v, str) and {name}(v) is not None", message))


uuid_text = _pattern("_uuid", "must be a lower-case UUID")
hlc_stamp = _pattern("_hlc", "must be a clock stamp WWWWWWWWWWWWWWW-CCCCCC-ORIGIN")
instant = Rule(*_pattern("_instant", "must be an RFC 3339 UTC time like "
                                     "2025-06-01T10:00:00.000Z").steps,
               ("_real_time(v)", "is not a real calendar time"))  # fmt: skip


def text(min_len: int = 0, max_len: int = 200) -> Rule:
    return Rule(
        (f"isinstance(v, str) and {min_len} <= len(v) <= {max_len}",
         f"must be text of {min_len} to {max_len} characters"),
        ("v.isascii() or _unicode(v)", "must be valid Unicode text"),
        ("'\\x00' not in v", "must not contain NUL"),
    )  # fmt: skip


def integer(minimum: int = -MAX_INT, maximum: int = MAX_INT) -> Rule:
    # JSON gives exactly int; True is not a number here.
    return Rule(("v.__class__ is int", "must be an integer"),
                (f"{minimum} <= v <= {maximum}", f"must be between {minimum} and {maximum}"))


def one_of(*choices: str) -> Rule:
    return Rule((f"v in {choices!r}", f"must be one of {', '.join(choices)}"))


def nullable(rule: Rule) -> Rule:
    return Rule(*((f"v is None or ({test})", message) for test, message in rule.steps))


# Tags as stored: the JSON text of a list of short strings (non-ASCII escaped: a character
# outside the BMP, an emoji, is 12 characters, a surrogate pair); each tag's
# steps run over every tag (`v` in the generator is the tag).
tags_json = Rule(*text(max_len=20 * 50 * 12 + 100).steps,
                 ("_tag_list(v) is not None", "must be a JSON list of strings"),
                 *((f"all(({test}) for v in _tag_list(v))", message)
                   for test, message in text(1, 50).steps))  # fmt: skip
nonzero = Rule(*integer().steps, ("v != 0", "must not be 0"))


# -- the facts ------------------------------------------------------------------------------
PROFILE: dict[str, Rule] = {
    "name": text(1, 200),
    "email": nullable(text(3, 254)),
    "phone": nullable(text(1, 40)),
    "address": nullable(text(0, 500)),
    "notes": nullable(text(0, 2000)),
    "tags": tags_json,
    "credit_limit": nullable(integer(0)),
}
ROWS: dict[str, dict[str, Rule]] = {
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
    valid = _VALID_BODY.get(kind)
    if valid is None or not valid(body):
        return _explain_body(kind, entity_id, body)
    _check_links(kind, entity_id, body)
    return body


def _explain_body(kind: str, entity_id: str, body: Any) -> dict[str, Any]:
    """check_body rule by rule: the first thing wrong as a ProtocolError naming its field."""
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
_CHANGE_CHECKS: dict[str, Rule] = {
    "id": uuid_text, "origin": uuid_text, "origin_seq": integer(1), "hlc": hlc_stamp,
    "kind": one_of(*KINDS), "entity_id": uuid_text, "body": text(2, MAX_BODY_BYTES),
    "recorded_at": instant,
}  # fmt: skip


# -- compiled validators: every rule of a change in one function per shape ------------------
def _valid_fields(name: str, shape: dict[str, Rule], keys_test: str) -> Callable[[Any], bool]:
    """Whether a value is a dict whose `keys` pass `keys_test` and whose fields each pass
    their rule: the rules' conditions one after another, in one function."""
    source = [f"def {name}(value):",
              "    if value.__class__ is not dict:",
              "        return False",
              "    keys = value.keys()",
              f"    if not ({keys_test}):",
              "        return False"]  # fmt: skip
    for field, rule in shape.items():
        source += [f"    v = value[{field!r}]",
                   f"    if not ({rule.condition}):",
                   "        return False"]  # fmt: skip
    return _compiled([*source, "    return True"], name, fields=_CHANGE_FIELD_SET,
                     pulled=_PULLED_FIELD_SET, shape=set(shape))  # fmt: skip


def _valid_body(counts: dict[str, tuple[int, int]]) -> Callable[[Any], bool]:
    """Whether a body has the rows of its kind's facts (`counts`), each passing every rule of
    its table (the links between rows are _check_links')."""
    source = ["def valid_body(value):",
              "    if value.__class__ is not dict or not value.keys() <= tables:",
              "        return False"]  # fmt: skip
    for table, (low, high) in counts.items():
        # A table a kind may leave out is checked when present (null is not a list).
        indent = "        " if low == 0 else "    "
        if low == 0:
            source.append(f"    if {table!r} in value:")
        source += [f"{indent}rows = value.get({table!r})",
                   f"{indent}if rows.__class__ is not list or not {low} <= len(rows) <= {high}:",
                   f"{indent}    return False",
                   f"{indent}for row in rows:",
                   f"{indent}    if not valid_row[{table!r}](row):",
                   f"{indent}        return False"]  # fmt: skip
    return _compiled([*source, "    return True"], "valid_body", tables=counts.keys(),
                     valid_row=_VALID_ROW)  # fmt: skip


_VALID_ROW = {table: _valid_fields(f"valid_{table}", shape, "keys == shape")
              for table, shape in ROWS.items()}  # fmt: skip
_VALID_BODY = {kind: _valid_body(counts) for kind, counts in FACTS.items()}
_VALID_CHANGE = _valid_fields("valid_change", _CHANGE_CHECKS, "keys == fields or keys == pulled")


def check_change(change: Any) -> dict[str, Any]:
    """A change with exactly the expected fields, types and fact shape, or ProtocolError."""
    return checked_change(change)[0]


def checked_change(change: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """check_change, with the body it parsed (a node applying the change reuses it)."""
    if not _VALID_CHANGE(change):
        _explain_change(change)
    try:
        body = orjson.loads(change["body"])
    except (ValueError, RecursionError):
        raise ProtocolError("must be JSON text", "body") from None
    check_body(change["kind"], change["entity_id"], body)
    if len(change) != len(CHANGE_FIELDS):
        change = {f: change[f] for f in CHANGE_FIELDS}
    return change, body


def _explain_change(change: Any) -> None:
    """A change's own fields rule by rule: the first thing wrong as a ProtocolError."""
    if not isinstance(change, dict) or (change.keys() != _CHANGE_FIELD_SET
                                        and change.keys() != _PULLED_FIELD_SET):  # fmt: skip
        raise ProtocolError(f"a change needs exactly the fields {', '.join(CHANGE_FIELDS)}")
    for field, check in _CHANGE_CHECKS.items():
        try:
            check(change[field])
        except ValueError as exc:
            raise ProtocolError(str(exc), field) from None


# -- a push, as central reads it -------------------------------------------------------------
@dataclass(frozen=True)
class Refused:
    """Why a push body is refused, as its problem answer says (checked_push's result)."""

    status: int
    detail: str
    errors: list[dict[str, str]] | None = None
    change_id: str | None = None
    log: str = ""


Checked = tuple[str, list[dict[str, Any]], int | None, str | None]  # origin, batch, acked, epoch


def checked_push(raw: bytes) -> Checked | Refused:
    """A push body read and every change in it checked (check_change), or why not. Central
    runs it in a checker process for a large body, so the checks of several pushes use other
    cores than its event loop's (sync/central.py Checkers)."""
    try:
        payload = orjson.loads(raw)
        if not isinstance(payload, dict) or set(payload) - {"origin", "changes", "acked",
                                                             "epoch"}:  # fmt: skip
            raise ProtocolError("a push is {origin, changes, acked?, epoch?}")
        origin, acked, epoch = payload["origin"], payload.get("acked"), payload.get("epoch")
        uuid_text(origin)
        if not isinstance(payload["changes"], list):
            raise ProtocolError("changes must be a list")
        if acked is not None:
            integer(0)(acked)
        if epoch is not None and not isinstance(epoch, str):
            raise ProtocolError("epoch must be a string")
        if len(payload["changes"]) > MAX_BATCH_CHANGES:
            raise ProtocolError(f"at most {MAX_BATCH_CHANGES} changes per push")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return Refused(400, f"malformed push: {exc}")
    batch = []
    for index, change in enumerate(payload["changes"]):
        try:
            batch.append(check_change(change))
        except ProtocolError as exc:
            # Nothing of the batch is stored: a bad change must never reach other shops.
            change_id = change.get("id") if isinstance(change, dict) else None
            return Refused(422, f"change {index} ({change_id}) is malformed: {exc}",
                           errors=[{"field": f"changes[{index}].{exc.field or 'change'}",
                                    "message": str(exc)}],
                           change_id=change_id if isinstance(change_id, str) else None,
                           log=f"change {change_id}: {exc}")  # fmt: skip
    return origin, batch, acked, epoch


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
