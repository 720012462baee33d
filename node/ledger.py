"""The khata: an append-only list of credits (payments in) and debits per customer.

`ledger_balance` is the sum of the entries (credits minus debits; negative = the customer
owes). The customer row caches it for O(1) reads; every write changes both in one
transaction. `balance_after` is derived in (created_at, id) order, so every node holding the
same entries shows the same running balances.
"""

from __future__ import annotations

import uuid
from typing import Any

from node import changes, derive
from node.clock import now_iso, uuid7
from node.customers import customer_row, find_customer
from node.db import fetch_all, fetch_one, fetch_value
from node.errors import Conflict, NotFound
from node.periods import period_filter
from node.settings import get_settings

ENTRY_COLUMNS = "id, type, amount, description, reference_id, reverses_id, created_at"
DESCRIPTION_MAX = 500  # what the API and the sync protocol accept


def credit_limit_for(customer: dict[str, Any]) -> int | None:
    """The customer's own limit, else the shop's default; None means no limit."""
    if customer["credit_limit"] is not None:
        return customer["credit_limit"]
    return get_settings()["default_credit_limit"]


def check_credit_limit(customer: dict[str, Any], debit: int) -> None:
    """Refuse (Conflict, with the credit available) a debit past the customer's credit limit."""
    limit = credit_limit_for(customer)
    if limit is None:
        return
    available = max(0, limit + customer["ledger_balance"])
    if debit > available:
        raise Conflict(
            f"this debit of {debit} exceeds the customer's available credit of {available} "
            f"(credit limit {limit}, currently owes {max(0, -customer['ledger_balance'])})",
            available_credit=available,
            credit_limit=limit,
        )


def append_entry(
    change: changes.Change,
    customer_id: str,
    entry_type: str,
    amount: int,
    description: str,
    reference_id: str | None = None,
    reverses_id: str | None = None,
) -> str:
    """Write one entry into the change being recorded; returns its id. The cached balance
    moves when the change is logged (node.derive)."""
    entry_id = reversal_id(reverses_id) if reverses_id else uuid7()
    change.insert("ledger_entry", {
        "id": entry_id, "customer_id": customer_id, "type": entry_type, "amount": amount,
        "description": description, "reference_id": reference_id, "reverses_id": reverses_id,
        "created_at": now_iso(),
    })  # fmt: skip
    return entry_id


def reversal_id(entry_id: str) -> str:
    """The id of the one reversal an entry can have: the same at every shop, so two shops
    reversing one entry offline make one fact, not two (sync keeps the earlier)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"shopnode:reversal:{entry_id}"))


def record_entry(
    customer_id: str,
    entry_type: str,
    amount: int,
    description: str | None,
    reference_id: str | None = None,
    override_credit_limit: bool = False,
) -> dict[str, Any]:
    """Record a payment received (credit) or a manual debit, enforcing the credit limit."""
    with changes.recording(f"ledger.{entry_type}") as change:
        customer = find_customer(customer_id)
        if entry_type == "debit" and not override_credit_limit:
            check_credit_limit(customer, amount)
        default = "Payment received" if entry_type == "credit" else "Manual debit"
        change.entity_id = append_entry(change, customer_id, entry_type, amount,
                                        description or default, reference_id)  # fmt: skip
        return recorded(change)


def reverse_entry(customer_id: str, entry_id: str) -> dict[str, Any]:
    """Undo an entry with an opposite entry pointing at it; each entry reverses once."""
    with changes.recording("ledger.reversal") as change:
        find_customer(customer_id)
        original = customer_row("ledger_entry", "id, type, amount, description, reference_id, "
                                "reverses_id", entry_id, customer_id, "ledger entry")  # fmt: skip
        if original["reference_id"] and fetch_one(
            "SELECT 1 FROM sale WHERE id = ?", (original["reference_id"],)
        ):
            raise Conflict("this entry belongs to a sale; refund the sale instead of reversing")
        if original["reverses_id"] is not None:
            raise Conflict("this entry is itself a reversal; record a new entry instead")
        if fetch_one("SELECT id FROM ledger_entry WHERE reverses_id = ?", (entry_id,)):
            raise Conflict("this entry has already been reversed")
        opposite = "debit" if original["type"] == "credit" else "credit"
        change.entity_id = append_entry(
            change,
            customer_id,
            opposite,
            original["amount"],
            f"Reversal of: {original['description']}"[:DESCRIPTION_MAX],
            reference_id=entry_id,
            reverses_id=entry_id,
        )
        return recorded(change)


_RUNNING = (
    f"SELECT {ENTRY_COLUMNS}, SUM(CASE type WHEN 'credit' THEN amount ELSE -amount END) "
    "OVER (ORDER BY created_at, id) AS balance_after FROM ledger_entry WHERE customer_id = ?"
)


def _render(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "type", "amount", "balance_after", "description", "reference_id",
            "reverses_id", "created_at")  # fmt: skip
    return {k: row[k] for k in keys}


# One entry's balance after it: the customer's balance less the entries after it, so the
# newest entry (every one just recorded) costs an index probe, not a sum of its history.
_ONE = (
    f"SELECT {', '.join('e.' + c for c in ENTRY_COLUMNS.split(', '))}, "
    "c.ledger_balance - COALESCE((SELECT SUM(CASE a.type WHEN 'credit' THEN a.amount "
    "ELSE -a.amount END) FROM ledger_entry a "
    "WHERE a.customer_id = e.customer_id AND (a.created_at, a.id) > (e.created_at, e.id)), 0) "
    "AS balance_after FROM ledger_entry e JOIN customer c ON c.id = e.customer_id "
    "WHERE e.id = ? AND e.customer_id = ?"
)


# The balance after an entry given as (customer, created_at, id): what _ONE says of it.
_AFTER = (
    f"SELECT c.ledger_balance - COALESCE((SELECT SUM({derive.FACT_TERMS['ledger_entry'][1]}) "
    "FROM ledger_entry a WHERE a.customer_id = c.id AND (a.created_at, a.id) > (?, ?)), 0) "
    "FROM customer c WHERE c.id = ?"
)


def recorded(change: changes.Change) -> dict[str, Any]:
    """The entry a change has just recorded, as get_entry shows it, from the fact in hand
    (inside the change's block: its balance is already moved)."""
    entry = change.body["ledger_entry"][-1]
    after = fetch_value(_AFTER, (entry["created_at"], entry["id"], entry["customer_id"]))
    return _render({**entry, "balance_after": after})


def get_entry(customer_id: str, entry_id: str) -> dict[str, Any]:
    row = fetch_one(_ONE, (entry_id, customer_id))
    if row is None:
        raise NotFound(f"no ledger entry {entry_id} for this customer")
    return _render(row)


def list_entries(
    customer_id: str,
    lower: str | None = None,
    upper: str | None = None,
    page: int = 1,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Entries newest first within [lower, upper), each with its running balance."""
    find_customer(customer_id)
    condition, bounds = period_filter(lower, upper)
    params = [customer_id, *bounds]
    total = fetch_one(f"SELECT COUNT(*) AS n FROM ({_RUNNING}) WHERE {condition}", params)["n"]
    rows = fetch_all(
        f"SELECT * FROM ({_RUNNING}) WHERE {condition} "
        "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    )
    return [_render(r) for r in rows], total


def ledger_sum(customer_id: str) -> int:
    """The balance recomputed from the entries (the cached column must always equal it)."""
    row = fetch_one(
        "SELECT COALESCE(SUM(CASE type WHEN 'credit' THEN amount ELSE -amount END), 0) AS s "
        "FROM ledger_entry WHERE customer_id = ?",
        (customer_id,),
    )
    return row["s"]
