"""Totals derived from facts: the one place that says what a balance is.

A customer's `ledger_balance`, `loyalty_points`, `total_spent` and `total_orders`, and a
sale's live counters, are cached on their rows for O(1) reads but always recomputed here
from the facts this node holds (entries, points events, sales, refunds, late discounts),
whatever order the facts arrived in (`opening_*` columns carry totals a first-version
database held without facts; 0 for everything since). Local writes and merged changes both
end in these functions; `shopnode verify` (node/verify.py) checks the caches against the
same sums.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from node.db import execute, fetch_one, marks

# What one fact adds to its customer's total: the sums below add these up over the facts,
# and a fact this node records adds its own to the cached total (after_fact).
FACT_TERMS = {
    "ledger_entry": ("ledger_balance", "CASE type WHEN 'credit' THEN amount ELSE -amount END"),
    "loyalty_event": ("loyalty_points", "points"),
}
# Each derived column as a SQL expression over the facts of one row of its table. The
# covering indexes of migration 5 let each sum read only an index (bench/sync.py).
CUSTOMER_TOTALS = {
    "ledger_balance": "c.opening_ledger_balance + (SELECT COALESCE(SUM("
                      f"{FACT_TERMS['ledger_entry'][1]}), 0) FROM ledger_entry "
                      "WHERE customer_id = c.id)",
    "loyalty_points": "c.opening_loyalty_points + (SELECT COALESCE(SUM("
                      f"{FACT_TERMS['loyalty_event'][1]}), 0) FROM loyalty_event "
                      "WHERE customer_id = c.id)",
    "total_spent": "c.opening_total_spent + (SELECT COALESCE(SUM(total - discount_amount "
                   "- refunded_amount), 0) FROM sale WHERE customer_id = c.id)",
    # An order stops counting once it is refunded in full (a sale paid wholly in points
    # counts until its one refund of 0).
    "total_orders": "c.opening_total_orders + (SELECT COUNT(*) FROM sale s "
                    "WHERE s.customer_id = c.id AND (s.refunded_amount < s.total - "
                    "s.discount_amount OR (s.refunded_amount = 0 AND NOT EXISTS ("
                    "SELECT 1 FROM refund r WHERE r.sale_id = s.id))))",
}  # fmt: skip
SALE_COUNTERS = {
    "refunded_amount": "(SELECT COALESCE(SUM(amount), 0) FROM refund WHERE sale_id = s.id)",
    "points_reversed": "(SELECT COALESCE(SUM(points_reversed + points_shortfall), 0) "
                       "FROM refund WHERE sale_id = s.id)",
    "points_restored": "(SELECT COALESCE(SUM(points_restored), 0) FROM refund "
                       "WHERE sale_id = s.id)",
    "discount_amount": "s.till_discount_amount + (SELECT COALESCE(SUM(discount_amount), 0) "
                       "FROM sale_discount WHERE sale_id = s.id)",
    "points_redeemed": "s.till_points_redeemed + (SELECT COALESCE(SUM(points_redeemed), 0) "
                       "FROM sale_discount WHERE sale_id = s.id)",
    "points_earned": "s.till_points_earned - (SELECT COALESCE(SUM(points_not_earned), 0) "
                     "FROM sale_discount WHERE sale_id = s.id)",
}  # fmt: skip


def _update(table: str, alias: str, exprs: dict[str, str], ids: list[str]) -> None:
    assignments = ", ".join(f"{column} = {expr}" for column, expr in exprs.items())
    # SQLite has no UPDATE aliases: the subqueries name the row through a one-row join.
    execute(
        f"UPDATE {table} SET {assignments.replace(f'{alias}.', f'{table}.')} "
        f"WHERE id IN ({marks(ids)})",
        ids,
    )


# Which customer totals each kind of fact feeds (a payment moves only the balance).
FEEDS = {
    "ledger_entry": ("ledger_balance",),
    "loyalty_event": ("loyalty_points",),
    "sale": ("total_spent", "total_orders"),
    "refund": ("total_spent", "total_orders"),
    "sale_discount": ("total_spent", "total_orders"),
}


def customer(customer_id: str, columns: Iterable[str] | None = None) -> None:
    """Recompute a customer's totals (or only `columns` of them) from their facts."""
    customers([customer_id], columns)


def customers(ids: list[str], columns: Iterable[str] | None = None) -> None:
    """customer() for many customers, a statement per 500 (a merged page's customers)."""
    exprs = CUSTOMER_TOTALS if columns is None else {c: CUSTOMER_TOTALS[c] for c in columns}
    for start in range(0, len(ids), 500):
        _update("customer", "c", exprs, ids[start : start + 500])


def sale(sale_id: str, with_customer: bool = True) -> str | None:
    """Recompute a sale's counters from its refunds and late discounts, then (unless told
    not to) the customer totals sales feed; returns the customer id (None if the sale is
    not held)."""
    _update("sale", "s", SALE_COUNTERS, [sale_id])
    row = fetch_one("SELECT customer_id FROM sale WHERE id = ?", (sale_id,))
    if row is None:
        return None
    if with_customer:
        customer(row["customer_id"], FEEDS["sale"])
    return row["customer_id"]


def after_fact(table: str, fact: dict[str, Any]) -> None:
    """Bring every total a newly stored fact feeds up to date. An entry or points event adds
    its own term to the cached total (O(1), where a sum over the customer's history grows
    with it): the cache equals the sum before, so it does after. Merges, which may store
    facts in any order and replace what they held, recompute the sums (sync/merge.py), and
    `shopnode verify` compares the caches with them."""
    if table in ("refund", "sale_discount"):
        sale(fact["sale_id"])
    elif table == "sale":
        sale(fact["id"])
    elif table in FACT_TERMS:
        column, term = FACT_TERMS[table]
        execute(f"UPDATE customer SET {column} = {column} + (SELECT {term} FROM {table} "
                "WHERE id = ?) WHERE id = ?", (fact["id"], fact["customer_id"]))  # fmt: skip


def phone_digits(phone: str | None) -> str | None:
    return re.sub(r"\D", "", phone) if phone else None
