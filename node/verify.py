"""`shopnode verify`: the node's cached totals against the facts, and tombstones against data.

Every derived total (a customer's balance, points, spent and orders; a sale's refunded
amount, discounts and points) is recomputed from the facts with the same expressions that
maintain it (node/derive.py) and compared with what the node shows. Every deleted or
anonymized customer is checked for personal data left in the customer table, the change
log or changes waiting for a prerequisite.
"""

from __future__ import annotations

import json
from typing import Any

from node import changes, derive
from node.db import fetch_all
from node.models import (
    SCRUBBED_ROW,
    TELEGRAM_MODELS,
    Customer,
    LedgerEntry,
    Sale,
    SyncPending,
    Tombstone,
)


def differences() -> list[str]:
    """One line per difference found; empty when the books are exact and tombstones hold."""
    found = _totals("customer", "c", derive.CUSTOMER_TOTALS, "customer")
    found += _totals("sale", "s", derive.SALE_COUNTERS, "sale")
    found += _tombstones()
    return found


def summary() -> dict[str, int]:
    counted = {"customers": Customer, "sales": Sale, "entries": LedgerEntry,
               "tombstones": Tombstone, "pending": SyncPending}  # fmt: skip
    return {name: model.select().count() for name, model in counted.items()}


def _totals(table: str, alias: str, exprs: dict[str, str], label: str) -> list[str]:
    derived = ", ".join(f"{expr} AS derived_{column}" for column, expr in exprs.items())
    stored = ", ".join(f"{alias}.{column}" for column in exprs)
    differs = " OR ".join(f"{alias}.{column} IS NOT derived_{column}" for column in exprs)
    rows = fetch_all(
        f"SELECT * FROM (SELECT {alias}.id, {stored}, {derived} FROM {table} {alias}) "
        f"AS {alias} WHERE {differs} ORDER BY id"
    )
    return [
        f"{label} {row['id']}: {column} is {row[column]} but its facts give "
        f"{row['derived_' + column]}"
        for row in rows
        for column in exprs
        if row[column] != row["derived_" + column]
    ]


def _tombstones() -> list[str]:
    found = []
    personal = ", ".join(f"c.{column}" for column in SCRUBBED_ROW)
    for row in fetch_all(
        f"SELECT t.customer_id, c.id AS held, c.anonymized_at, {personal} "
        "FROM tombstone t LEFT JOIN customer c ON c.id = t.customer_id ORDER BY t.customer_id"
    ):
        customer_id = row["customer_id"]
        if row["held"] is None:
            continue
        if row["anonymized_at"] is None:
            found.append(f"customer {customer_id}: deleted or anonymized, but live again")
        left = [column for column, value in SCRUBBED_ROW.items() if row[column] != value]
        if left:
            found.append(f"customer {customer_id}: deleted or anonymized, but keeps "
                         f"{', '.join(left)}")  # fmt: skip
    for row in fetch_all(
        "SELECT l.id, l.kind, l.body FROM change_log l JOIN tombstone t "
        "ON t.customer_id = l.entity_id WHERE l.kind IN ('customer.created', "
        "'customer.updated') ORDER BY l.id"
    ):
        if changes.scrubbed_text(row["kind"], row["body"]) != row["body"]:
            found.append(f"change {row['id']}: holds personal data of a deleted customer")
    for row in fetch_all(
        "SELECT p.change_id, p.change FROM sync_pending p JOIN tombstone t "
        "ON t.customer_id = p.entity_id ORDER BY p.change_id"
    ):
        change: dict[str, Any] = json.loads(row["change"])
        if changes.scrubbed_text(change["kind"], change["body"]) != change["body"]:
            found.append(f"pending change {row['change_id']}: holds personal data of a "
                         "deleted customer")  # fmt: skip
    for model in TELEGRAM_MODELS:
        table = model._meta.table_name
        for row in fetch_all(f"SELECT DISTINCT x.customer_id FROM {table} x JOIN tombstone t "
                             "ON t.customer_id = x.customer_id ORDER BY 1"):  # fmt: skip
            found.append(f"customer {row['customer_id']}: deleted or anonymized, but {table} "
                         "still ties it to a Telegram account")  # fmt: skip
    return found
