"""Reports: who owes what and for how long; points outstanding and their value."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from node.db import fetch_all, fetch_one
from node.ids import now
from node.periods import period_filter
from node.settings import get_settings

BUCKETS = (("0-30", 30), ("31-60", 60), ("61-90", 90), ("90+", None))


def bucket_for(age_days: int) -> str:
    for name, upto in BUCKETS:
        if upto is None or age_days <= upto:
            return name
    raise AssertionError("unreachable")


def unpaid_debits(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(created_at, unpaid part) of each debit, with all credits applied oldest debit first."""
    credits = sum(e["amount"] for e in entries if e["type"] == "credit")
    unpaid = []
    for entry in entries:
        if entry["type"] != "debit":
            continue
        applied = min(credits, entry["amount"])
        credits -= applied
        if entry["amount"] > applied:
            unpaid.append((entry["created_at"], entry["amount"] - applied))
    return unpaid


def receivables(limit: int = 100) -> dict[str, Any]:
    """Total owed, split into ageing buckets, and the customers who owe most."""
    today = now()
    totals = {name: 0 for name, _ in BUCKETS}
    owing = fetch_all(
        "SELECT id, name, phone, ledger_balance FROM customer WHERE ledger_balance < 0 "
        "ORDER BY ledger_balance, id"
    )
    customers = []
    for customer in owing:
        entries = fetch_all(
            "SELECT type, amount, created_at FROM ledger_entry WHERE customer_id = ? "
            "ORDER BY created_at, id",
            (customer["id"],),
        )
        mine = {name: 0 for name, _ in BUCKETS}
        unpaid = unpaid_debits(entries)
        for created_at, amount in unpaid:
            name = bucket_for(_age_days(created_at, today))
            mine[name] += amount
            totals[name] += amount
        oldest = unpaid[0][0] if unpaid else None
        age = _age_days(oldest, today) if oldest else 0
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


def _age_days(created_at: str, today: datetime) -> int:
    moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    return max(0, (today - moment).days)


def loyalty_report(lower: str | None, upper: str | None) -> dict[str, Any]:
    """Points outstanding now and their money value; points moved in the period."""
    settings = get_settings()
    outstanding = fetch_one("SELECT COALESCE(SUM(loyalty_points), 0) AS n FROM customer")["n"]
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
