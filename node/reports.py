"""Reports: who owes what and for how long; points outstanding and their value."""

from __future__ import annotations

from datetime import date
from typing import Any

from node.clock import shop_day, today
from node.db import fetch_all, fetch_one
from node.periods import period_filter
from node.settings import get_settings

BUCKETS = (("0-30", 30), ("31-60", 60), ("61-90", 90), ("90+", None))


def bucket_for(age_days: int) -> str:
    for name, upto in BUCKETS:
        if upto is None or age_days <= upto:
            return name
    raise AssertionError("unreachable")


def unpaid_debits(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(created_at, unpaid part) of each debit, oldest first.

    A reversed entry and its reversal cancel out; a credit that references what a debit
    references (a sale's refund or points discount, a payment against an invoice) pays that
    debit first; every other credit pays the oldest debits first.
    """
    reversed_ids = {e["reverses_id"] for e in entries if e["reverses_id"]}
    live = [e for e in entries if not e["reverses_id"] and e["id"] not in reversed_ids]
    debits = [{**e, "unpaid": e["amount"]} for e in live if e["type"] == "debit"]
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for debit in debits:
        if debit["reference_id"]:
            by_reference.setdefault(debit["reference_id"], []).append(debit)
    pool = 0
    for credit in (e for e in live if e["type"] == "credit"):
        amount = credit["amount"]
        for debit in by_reference.get(credit["reference_id"] or "", []):
            applied = min(amount, debit["unpaid"])
            debit["unpaid"] -= applied
            amount -= applied
        pool += amount
    unpaid = []
    for debit in debits:
        applied = min(pool, debit["unpaid"])
        pool -= applied
        if debit["unpaid"] > applied:
            unpaid.append((debit["created_at"], debit["unpaid"] - applied))
    return unpaid


def receivables(limit: int = 100) -> dict[str, Any]:
    """Total owed, split into ageing buckets, and the customers who owe most."""
    this_day = today()
    totals = {name: 0 for name, _ in BUCKETS}
    owing = fetch_all(
        "SELECT id, name, phone, ledger_balance FROM customer WHERE ledger_balance < 0 "
        "ORDER BY ledger_balance, id"
    )
    # Every owing customer's entries in one query, not one query per customer.
    entries_of: dict[str, list[dict[str, Any]]] = {c["id"]: [] for c in owing}
    for entry in fetch_all(
        "SELECT e.customer_id, e.id, e.type, e.amount, e.reference_id, e.reverses_id, "
        "e.created_at FROM ledger_entry e JOIN customer c ON c.id = e.customer_id "
        "WHERE c.ledger_balance < 0 ORDER BY e.customer_id, e.created_at, e.id"
    ):
        entries_of[entry["customer_id"]].append(entry)
    customers = []
    for customer in owing:
        mine = {name: 0 for name, _ in BUCKETS}
        unpaid = unpaid_debits(entries_of[customer["id"]])
        for created_at, amount in unpaid:
            name = bucket_for(_age_days(created_at, this_day))
            mine[name] += amount
            totals[name] += amount
        oldest = unpaid[0][0] if unpaid else None
        age = _age_days(oldest, this_day) if oldest else 0
        customers.append({
            "id": customer["id"],
            "name": customer["name"],
            "phone": customer["phone"],
            "owed": -customer["ledger_balance"],
            "oldest_unpaid_at": oldest,
            "age_days": age,
            "bucket": bucket_for(age),
            "buckets": mine,
        })
    return {
        "currency": get_settings()["currency"],
        "total_owed": sum(c["owed"] for c in customers),
        "customers_owing": len(customers),
        "buckets": totals,
        "customers": customers[:limit],
    }


def owing_since(customer_id: str) -> str | None:
    """When the oldest debit the customer has not paid off was recorded; None if none."""
    unpaid = unpaid_debits(fetch_all(
        "SELECT id, type, amount, reference_id, reverses_id, created_at FROM ledger_entry "
        "WHERE customer_id = ? ORDER BY created_at, id", (customer_id,)))  # fmt: skip
    return unpaid[0][0] if unpaid else None


def age_days(created_at: str) -> int:
    """Shop days from `created_at` to today."""
    return _age_days(created_at, today())


def _age_days(created_at: str, this_day: date) -> int:
    """Shop days since the entry's day: last night's debit is a day old this morning."""
    return max(0, (this_day - shop_day(created_at)).days)


def loyalty_report(lower: str | None, upper: str | None) -> dict[str, Any]:
    """Points outstanding now and their money value; points moved in the period."""
    settings = get_settings()
    # A deleted (anonymized) customer's points can never be redeemed: not a liability.
    outstanding = fetch_one(
        "SELECT COALESCE(SUM(loyalty_points), 0) AS n FROM customer WHERE anonymized_at IS NULL"
    )["n"]
    condition, params = period_filter(lower, upper)
    moved = {
        row["kind"]: row
        for row in fetch_all(
            "SELECT kind, SUM(CASE WHEN points > 0 THEN points ELSE 0 END) AS added, "
            "SUM(CASE WHEN points < 0 THEN -points ELSE 0 END) AS removed FROM loyalty_event "
            f"WHERE {condition} GROUP BY kind",
            params,
        )
    }

    def total(kind: str, column: str) -> int:
        return moved[kind][column] if kind in moved else 0

    return {
        "currency": settings["currency"],
        "point_value": settings["point_value"],
        "points_outstanding": outstanding,
        "outstanding_value": outstanding * settings["point_value"],
        "from": lower,
        "to": upper,
        "points_earned": total("earn", "added"),
        "points_redeemed": total("redeem", "removed"),
        "points_reversed_by_refunds": total("refund", "removed"),
        "points_restored_by_refunds": total("refund", "added"),
        "points_adjusted": total("adjust", "added") - total("adjust", "removed"),
    }
