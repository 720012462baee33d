"""Customers: profiles, search, and delete-or-anonymize."""

from __future__ import annotations

import json
import re
from typing import Any

from peewee import fn

from node import changes, derive
from node import validation as v
from node.clock import now_iso, uuid7
from node.db import checkpoint, execute, fetch_all, fetch_one
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
RECENT_PURCHASES = 10


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
    logged as create_customer logs one, in one statement per table (CSV import); their ids."""
    created_at = now_iso()
    facts = [new_customer(uuid7(), fields, created_at) for fields in many]
    changes.record_each("customer.created", "customer", facts)
    return [fact["id"] for fact in facts]


def new_customer(customer_id: str, fields: dict[str, Any], created_at: str) -> dict[str, Any]:
    """The customer.created fact of a new customer."""
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
    # Every money write reads it: hand-written SQL (bench/money.py, node/db.py).
    row = fetch_one(
        f"SELECT {COLUMNS} FROM customer c WHERE c.id = ? AND c.anonymized_at IS NULL",
        (customer_id,),
    )
    if row is None:
        raise NotFound(f"no customer with id {customer_id}")
    return row


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
        customer["recent_purchases"] = fetch_all(
            "SELECT id, receipt_number, total, created_at FROM sale WHERE customer_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (customer_id, RECENT_PURCHASES),
        )
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


def _search_filter(search: str) -> tuple[str, list[Any]]:
    """SQL condition for a search term: trigram index when it can, LIKE for 1-2 characters."""
    term = search.strip()
    digits = re.sub(r"\D", "", term)
    phone_like = bool(digits) and re.fullmatch(r"[0-9+()\-.\s/]+", term) is not None
    if len(term) >= 3 and (not phone_like or len(digits) >= 3):
        match = "{name email}: " + _fts_phrase(term)
        if phone_like:
            match = f"({match}) OR (phone_digits: {_fts_phrase(digits)})"
        return "c.rowid IN (SELECT rowid FROM customer_fts WHERE customer_fts MATCH ?)", [match]
    conditions = ["c.name LIKE ? ESCAPE '\\'", "c.email LIKE ? ESCAPE '\\'"]
    params: list[Any] = [_like(term), _like(term)]
    if phone_like:
        conditions.append("c.phone_digits LIKE ? ESCAPE '\\'")
        params.append(_like(digits))
    return "(" + " OR ".join(conditions) + ")", params


def list_customers(
    page: int = 1,
    limit: int = 20,
    search: str | None = None,
    sort: str = "created_at",
    order: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of live customers and the total count, in a stable order (ties by id)."""
    # Hand-written SQL: bench/search.py times these two statements and prints their plans.
    where, params = "c.anonymized_at IS NULL", []
    if search and search.strip():
        condition, params = _search_filter(search)
        where += " AND " + condition
    direction = (order or DEFAULT_ORDER[sort]).upper()
    order_by = f"{SORTS[sort]} {direction}, c.id {direction}"
    total = fetch_one(f"SELECT COUNT(*) AS n FROM customer c WHERE {where}", params)["n"]
    rows = fetch_all(
        f"SELECT {COLUMNS} FROM customer c WHERE {where} ORDER BY {order_by} LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    )
    return [render(r) for r in rows], total
