"""Customers: profiles, search, and delete-or-anonymize."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from peewee import fn

from node import changes, derive
from node import validation as v
from node.clock import now_iso, uuid7, uuid7s
from node.db import checkpoint, execute, fetch_all, fetch_one, run
from node.errors import Conflict, NotFound
from node.models import (
    PROFILE_COLUMNS,
    SCRUBBED_ROW,
    TELEGRAM_MODELS,
    Customer,
    CustomerFieldClock,
    LedgerEntry,
    LoyaltyEvent,
    Sale,
)

PROFILE_FIELDS: dict[str, v.Field] = {
    "name": v.text(min_len=1, max_len=200),
    "email": v.nullable(v.email),
    "phone": v.nullable(v.phone),
    "address": v.nullable(v.text(max_len=500)),
    "notes": v.nullable(v.text(max_len=2000)),
    "tags": v.tags,
    "credit_limit": v.nullable(v.integer(minimum=0)).describe(
        "minor units; null: the shop's default_credit_limit"
    ),
}
# The API takes the profile the models declare (and a CSV row and customer.updated carry).
assert tuple(PROFILE_FIELDS) == PROFILE_COLUMNS, "PROFILE_FIELDS and PROFILE_COLUMNS differ"

SORTS = {
    "name": "c.name COLLATE NOCASE",
    "created_at": "c.created_at",
    "total_spent": "c.total_spent",
    "loyalty_points": "c.loyalty_points",
}
DEFAULT_ORDER = {
    "name": "ASC", "created_at": "DESC", "total_spent": "DESC", "loyalty_points": "DESC"
}

COLUMNS = (
    "c.id, c.name, c.email, c.phone, c.address, c.loyalty_points, c.total_spent, "
    "c.total_orders, c.notes, c.tags, c.credit_limit, c.ledger_balance, c.created_at, "
    "c.updated_at"
)
# A row as the JSON object render() makes of it, written by SQLite: a list page is one
# string per customer, with no row built in Python (bench/search.py).
JSON_ROW = "json_object(" + ", ".join(
    f"'{column[2:]}', " + (f"json({column})" if column == "c.tags" else column)
    for column in COLUMNS.split(", ")
) + ")"  # fmt: skip
RECENT_PURCHASES = 10
_COLUMN_NAMES = tuple(column.removeprefix("c.") for column in COLUMNS.split(", "))
_LIVE_CUSTOMER = f"SELECT {COLUMNS} FROM customer c WHERE c.id = ? AND c.anonymized_at IS NULL"
PURCHASE_COLUMNS = ("id", "receipt_number", "total", "created_at")
_RECENT_PURCHASES = (f"SELECT {', '.join(PURCHASE_COLUMNS)} FROM sale WHERE customer_id = ? "
                     "ORDER BY created_at DESC, id DESC LIMIT ?")  # fmt: skip


def render(row: dict[str, Any]) -> dict[str, Any]:
    """A customer row in the seed's shape (plus credit_limit, ledger_balance, updated_at)."""
    row = dict(row)
    row["tags"] = json.loads(row["tags"])
    return row


def create_customer(fields: dict[str, Any]) -> dict[str, Any]:
    """Create a customer from validated profile fields."""
    customer_id = uuid7()
    with changes.recording("customer.created", customer_id) as change:
        change.insert("customer", new_customer(customer_id, fields, now_iso()))
    return get_customer(customer_id, with_history=False)


def create_customers(many: list[dict[str, Any]]) -> list[str]:
    """Create customers from validated profile fields in the caller's transaction, each
    logged as create_customer logs one, in a few statements per table (CSV import makes
    them in its reading thread and records them as this does); their ids."""
    created_at = now_iso()
    facts = [new_customer(customer_id, fields, created_at)
             for customer_id, fields in zip(uuid7s(len(many)), many, strict=True)]  # fmt: skip
    made = changes.new_facts("customer.created", "customer", facts)
    changes.record_each("customer.created", "customer", made)
    return [fact["id"] for fact in facts]


def new_customer(customer_id: str, fields: dict[str, Any], created_at: str) -> dict[str, Any]:
    """The customer.created fact of a new customer (CSV import makes them as this does)."""
    return {
        "id": customer_id,
        "name": fields["name"],
        "email": fields.get("email"),
        "phone": fields.get("phone"),
        "address": fields.get("address"),
        "notes": fields.get("notes"),
        "tags": json.dumps(fields.get("tags", [])),
        "credit_limit": fields.get("credit_limit"),
        "created_at": created_at,
    }


def find_customer(customer_id: str) -> dict[str, Any]:
    """The live (not deleted) customer row, or NotFound."""
    # Every money write and GET by id reads it: hand-written SQL straight on the thread's
    # connection (bench/money.py, bench/run.py's GET by id; node/db.py).
    row = run(_LIVE_CUSTOMER, (customer_id,)).fetchone()
    if row is None:
        raise NotFound(f"no customer with id {customer_id}")
    return dict(zip(_COLUMN_NAMES, row, strict=True))


def customer_row(
    table: str, columns: str, row_id: str, customer_id: str, what: str
) -> dict[str, Any]:
    """A row of `table` that belongs to this customer, or NotFound naming `what`."""
    row = fetch_one(
        f"SELECT {columns} FROM {table} WHERE id = ? AND customer_id = ?", (row_id, customer_id)
    )
    if row is None:
        raise NotFound(f"no {what} {row_id} for this customer")
    return row


def get_customer(customer_id: str, with_history: bool = True) -> dict[str, Any]:
    customer = render(find_customer(customer_id))
    if with_history:
        rows = run(_RECENT_PURCHASES, (customer_id, RECENT_PURCHASES))
        customer["recent_purchases"] = [dict(zip(PURCHASE_COLUMNS, row, strict=True))
                                        for row in rows]  # fmt: skip
    return customer


def update_customer(customer_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Apply a partial update; tags are replaced, not merged."""
    with changes.recording("customer.updated", customer_id) as change:
        find_customer(customer_id)
        stored = {k: json.dumps(v) if k == "tags" else v for k, v in fields.items()}
        set_profile(customer_id, stored)
        change.set_fields(customer_id, stored)
    return get_customer(customer_id)


def set_profile(customer_id: str, stored: dict[str, Any]) -> None:
    """Write profile fields as stored (tags as JSON text), keeping phone_digits in step."""
    values = dict(stored)
    if "phone" in values:
        values["phone_digits"] = derive.phone_digits(values["phone"])
    values["updated_at"] = now_iso()
    assignments = ", ".join(f"{column} = ?" for column in values)
    execute(f"UPDATE customer SET {assignments} WHERE id = ?", (*values.values(), customer_id))


def has_history(customer_id: str) -> bool:
    return any(model.select().where(model.customer == customer_id).exists()
               for model in (Sale, LedgerEntry, LoyaltyEvent))  # fmt: skip


def delete_customer(customer_id: str) -> str:
    """Delete a customer without history; anonymize one with history. Returns which."""
    with changes.recording(entity_id=customer_id) as change:
        customer = find_customer(customer_id)
        if customer["ledger_balance"] != 0:
            # Once anonymized nobody could post to the account: settle it first.
            owes = "owes" if customer["ledger_balance"] < 0 else "is owed"
            raise Conflict(
                f"this customer {owes} {abs(customer['ledger_balance'])}; settle the ledger "
                "(a payment, or a reversal or refund) before deleting",
                ledger_balance=customer["ledger_balance"],
            )
        outcome = scrub_customer(customer_id)
        changes.scrub_logged_changes(customer_id)
        change.kind = f"customer.{outcome}"
        change.tombstone(customer_id, customer["created_at"])
        changes.add_tombstone(customer_id, outcome, customer["created_at"], change.id)
    checkpoint()
    return outcome


def scrub_customer(customer_id: str) -> str:
    """Delete the row if nothing refers to it, else blank every personal field. Either way
    its Telegram link, invites and sent-message records go."""
    for model in TELEGRAM_MODELS:
        model.delete().where(model.customer_id == customer_id).execute()
    if not has_history(customer_id):
        CustomerFieldClock.delete().where(CustomerFieldClock.customer_id == customer_id).execute()
        Customer.delete().where(Customer.id == customer_id).execute()
        return "deleted"
    stamp = now_iso()
    # No credit either: nobody can post to the account of an anonymized customer.
    Customer.update(
        **SCRUBBED_ROW, credit_limit=None, updated_at=stamp,
        anonymized_at=fn.COALESCE(Customer.anonymized_at, stamp),
    ).where(Customer.id == customer_id).execute()  # fmt: skip
    return "anonymized"


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _typed_phone(term: str) -> str | None:
    """The digits of a term that looks like (part of) a phone number, typed any way."""
    digits = re.sub(r"\D", "", term)
    if digits and re.fullmatch(r"[0-9+()\-.\s/]+", term):
        return digits
    return None


def _search_match(term: str) -> str | None:
    """The trigram index's MATCH query for a term; None when the term is too short for it
    (1-2 characters, or 1-2 digits of a phone). phone_digits holds only digits, so a term
    with any other character cannot match it: such a term goes without a column filter,
    which halves FTS5's work (it need not read which column each trigram is in)."""
    digits = _typed_phone(term)
    if len(term) < 3 or (digits is not None and len(digits) < 3):
        return None
    if digits == term:  # only digits: in a name, an email or a phone
        return _fts_phrase(term)
    match = _fts_phrase(term) if re.search(r"\D", term) else "{name email}: " + _fts_phrase(term)
    if digits is not None:
        match += " OR phone_digits: " + _fts_phrase(digits)
    return match


def _like_filter(term: str) -> tuple[str, list[Any]]:
    """SQL condition for a term too short for the trigram index: LIKE on each row."""
    conditions = ["c.name LIKE ? ESCAPE '\\'", "c.email LIKE ? ESCAPE '\\'"]
    params: list[Any] = [_like(term), _like(term)]
    digits = _typed_phone(term)
    if digits is not None:
        conditions.append("c.phone_digits LIKE ? ESCAPE '\\'")
        params.append(_like(digits))
    return "(" + " OR ".join(conditions) + ")", params


class CustomerList(NamedTuple):
    """A page of customers as the JSON array the API sends; `total` is exact unless
    `capped` (then COUNT_CAP: more match)."""

    body: str
    total: int
    capped: bool
    more: bool  # a later page holds customers

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The page's customers as render() makes them."""
        return json.loads(self.body)


# Hand-written SQL below: bench/search.py times these statements and prints their plans.
# Without ANALYZE (a node never runs it) SQLite would read `anonymized_at IS NULL` through
# customer_anonymized and sort every live customer; the unary + keeps it a plain filter, so
# the page walks the sort's own index and stops after the page.
LIVE = "+c.anonymized_at IS NULL"
# Every customer matching a term, from the trigram index (rowids, no customer rows read).
MATCHES = "c.rowid IN (SELECT rowid FROM customer_fts WHERE customer_fts MATCH ?)"
# Live customers among the first COUNT_CAP + 1 matches, and as many more as there are
# anonymized customers (the index holds them too, as ANONYMIZED_NAME): those are found in
# customer_anonymized, not in their rows, and only when there are any (m is not
# materialized, so with none it is read once). And how many customers a sort's index holds.
COUNT_MATCHES = (
    "WITH anonymized(n) AS (SELECT COUNT(*) FROM customer INDEXED BY customer_anonymized "
    "WHERE anonymized_at IS NOT NULL), "
    "m(r) AS NOT MATERIALIZED (SELECT rowid FROM customer_fts WHERE customer_fts MATCH ?1 "
    "LIMIT ?2 + (SELECT n FROM anonymized)) "
    "SELECT (SELECT COUNT(*) FROM m) - (SELECT COUNT(*) FROM customer c INDEXED BY "
    "customer_anonymized WHERE c.anonymized_at IS NOT NULL AND c.rowid IN m) AS n, "
    "(SELECT COUNT(*) FROM customer) AS size"
)
# SELECT COUNT(*) of a whole table counts b-tree cells (~0.02 ms for 100k customers);
# with a WHERE it reads every entry (~10-20 ms).
COUNT_LIVE = (
    "SELECT (SELECT COUNT(*) FROM customer) - (SELECT COUNT(*) FROM customer "
    "INDEXED BY customer_anonymized WHERE anonymized_at IS NOT NULL) AS n"
)
COUNT_CAP = 1000
# Orders along which a fragment's matches lie spread out: walking one finds a page after
# about page * customers / matches of them. Not name: "Jame" bunches where James sort.
SPREAD_SORTS = ("created_at", "total_spent", "loyalty_points")
# Walking a sort's index costs ~0.2 us a customer passed; sorting the matches ~2 us each.
WALK_COST_RATIO = 10


def _walk_pays(matches: int, customers: int, needed: int) -> bool:
    """Whether walking a spread-out order until `needed` matches have passed costs less than
    reading and sorting every match."""
    return matches * matches * WALK_COST_RATIO > needed * customers


def list_customers(
    page: int = 1,
    limit: int = 20,
    search: str | None = None,
    sort: str = "created_at",
    order: str | None = None,
) -> CustomerList:
    """One page of live customers in a stable order (ties by id), and how many there are:
    exact without a search, else exact up to COUNT_CAP matches and capped above it, so a
    common fragment costs about the page, not every match."""
    term = (search or "").strip()
    params: list[Any] = []
    if not term:
        total, capped, where = fetch_one(COUNT_LIVE)["n"], False, LIVE
    elif (match := _search_match(term)) is None:
        condition, params = _like_filter(term)
        where = f"{LIVE} AND {condition}"
        found = fetch_one(
            f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM customer c WHERE {where} LIMIT ?)",
            [*params, COUNT_CAP + 1],
        )["n"]
        total, capped = min(found, COUNT_CAP), found > COUNT_CAP
    else:
        counted = fetch_one(COUNT_MATCHES, [match, COUNT_CAP + 1])
        total, capped = min(counted["n"], COUNT_CAP), counted["n"] > COUNT_CAP
        # Walk the sort's index testing each customer against the matches (the + keeps
        # SQLite from starting at the matches), or read every match and sort them: at most
        # COUNT_CAP (~2 ms); the walk passes at most every customer once (~20 ms per 100k).
        walk = capped or (
            sort in SPREAD_SORTS and _walk_pays(total, counted["size"], page * limit + 1)
        )
        where, params = f"{LIVE} AND {'+' if walk else ''}{MATCHES}", [match]
    direction = (order or DEFAULT_ORDER[sort]).upper()
    order_by = f"{SORTS[sort]} {direction}, c.id {direction}"
    # The page's rowids first (a sort then carries only its keys), then their JSON.
    rows = fetch_all(
        f"SELECT {JSON_ROW} AS customer FROM (SELECT c.rowid AS r FROM customer c "
        f"WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?) page "
        f"CROSS JOIN customer c ON c.rowid = page.r ORDER BY {order_by}",
        [*params, limit + 1, (page - 1) * limit],
    )
    more = len(rows) > limit  # one row past the page says whether a next page has any
    body = "[" + ",".join(row["customer"] for row in rows[:limit]) + "]"
    return CustomerList(body, total, capped, more)
