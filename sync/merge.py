"""Applying other shops' changes to this node: one rule set for every kind of change.

- rows of append-only tables (sales, refunds, ledger entries, loyalty events, new
  customers) are inserted once, keyed by their ids: they merge as sets;
- running totals are additions, which commute, so every node ends with the same balances;
- profile fields are last-writer-wins per field under the hybrid logical clock;
- anonymization and deletion win over edits: once scrubbed, a customer takes no more edits.
A change already held (same id) is skipped; the same id with another body is reported,
never applied over the original. Overdrafts revealed by a merge are kept and reported.
"""

from __future__ import annotations

import json
from typing import Any

from node import changes, hlc
from node.customers import ANONYMIZED_NAME, scrub_customer, set_profile
from node.db import execute, fetch_all, fetch_one
from node.ids import now_iso
from node.ledger import credit_limit_for


def report(kind: str, detail: str, change_id: str | None = None) -> None:
    execute(
        "INSERT INTO sync_report(kind, change_id, detail, created_at) VALUES (?, ?, ?, ?)",
        (kind, change_id, detail, now_iso()),
    )


def apply_change(change: dict[str, Any], my_origin: str) -> str:
    """Apply one remote change (caller holds the transaction): applied/duplicate/conflict."""
    held = fetch_one("SELECT body FROM change_log WHERE id = ?", (change["id"],))
    if held is not None:
        if changes.same_change(held["body"], change["body"], change["entity_id"]):
            return "duplicate"
        report("conflict", "same change id with a different body; kept ours", change["id"])
        return "conflict"
    if change["origin"] == my_origin:
        report("conflict", "a change under this node's own origin came back unknown", change["id"])
        return "conflict"
    taken = fetch_one(
        "SELECT id FROM change_log WHERE origin = ? AND origin_seq = ?",
        (change["origin"], change["origin_seq"]),
    )
    if taken is not None:
        report("conflict", f"origin sequence reused by another change {taken['id']}", change["id"])
        return "conflict"
    if not hlc.observe(change["hlc"], my_origin):
        report("clock_ahead", f"remote clock {change['hlc']} is far ahead of ours", change["id"])
    body = changes.check_body(json.loads(change["body"]))
    if change["kind"] == "customer.updated" and _scrubbed(change["entity_id"]):
        # An edit that lost the race to a deletion: keep the change, not the personal data.
        change = {**change, "body": changes.encode_body(
            changes.scrub_body(body, change["entity_id"]))}  # fmt: skip
    changes.insert_row("change_log", change)
    _apply_body(body, change)
    return "applied"


def _scrubbed(customer_id: str) -> bool:
    """Deleted (gone) or anonymized here."""
    row = fetch_one("SELECT anonymized_at FROM customer WHERE id = ?", (customer_id,))
    return row is None or row["anonymized_at"] is not None


def _apply_body(body: dict[str, Any], change: dict[str, Any]) -> None:
    for table, row in body.get("rows", []):
        if table != "customer" and "customer_id" in row:
            ensure_customer(row["customer_id"], row["created_at"])
        if table == "customer" and fetch_one("SELECT 1 FROM customer WHERE id = ?", (row["id"],)):
            _fill_placeholder(row, change)
            continue
        changes.insert_row(table, row)
        if table == "sale":
            _report_receipt_clash(row, change["id"])
    for table, row_id, deltas in body.get("adds", []):
        if table == "customer":
            ensure_customer(row_id, change["recorded_at"])
        changes.add_to_row(table, row_id, deltas)
        if table == "customer" and min(deltas.values()) < 0:
            _report_overdraft(row_id, deltas, change["id"])
    if "fields" in body:
        _merge_fields(*body["fields"], change["hlc"])
    if "scrub" in body:
        _scrub(body["scrub"], change)


def ensure_customer(customer_id: str, created_at: str) -> None:
    """History for a customer this node deleted: keep it under an anonymized placeholder."""
    if fetch_one("SELECT 1 FROM customer WHERE id = ?", (customer_id,)):
        return
    stamp = now_iso()
    changes.insert_row("customer", {
        "id": customer_id, "name": ANONYMIZED_NAME, "tags": "[]", "created_at": created_at,
        "updated_at": stamp, "anonymized_at": stamp,
    })  # fmt: skip


def _fill_placeholder(row: dict[str, Any], change: dict[str, Any]) -> None:
    """The customer's creation arrived after history that needed a placeholder for them:
    the real profile replaces it, unless the customer has since been deleted."""
    placeholder = fetch_one(
        "SELECT 1 FROM customer WHERE id = ? AND anonymized_at IS NOT NULL", (row["id"],)
    )
    deleted = fetch_one(
        "SELECT 1 FROM change_log WHERE entity_id = ? "
        "AND kind IN ('customer.deleted', 'customer.anonymized')",
        (row["id"],),
    )
    if placeholder is None or deleted is not None:
        if placeholder is None:
            report("conflict", f"customer {row['id']} already exists", change["id"])
        return
    profile = {k: v for k, v in row.items() if k not in ("id", "updated_at")}
    assignments = ", ".join(f"{column} = ?" for column in profile)
    execute(
        f"UPDATE customer SET {assignments}, anonymized_at = NULL WHERE id = ?",
        (*profile.values(), row["id"]),
    )


def _merge_fields(customer_id: str, fields: dict[str, Any], stamp: str) -> None:
    live = fetch_one(
        "SELECT 1 FROM customer WHERE id = ? AND anonymized_at IS NULL", (customer_id,)
    )
    if live is None:
        return  # deleted or anonymized: scrubbing wins over edits
    clocks = {
        r["field"]: r["hlc"]
        for r in fetch_all(
            "SELECT field, hlc FROM customer_field_clock WHERE customer_id = ?", (customer_id,)
        )
    }
    winners = {f: v for f, v in fields.items() if stamp > clocks.get(f, "")}
    if winners:
        set_profile(customer_id, winners)
        changes.set_field_clocks(customer_id, winners, stamp)


def _scrub(customer_id: str, change: dict[str, Any]) -> None:
    if fetch_one("SELECT 1 FROM customer WHERE id = ?", (customer_id,)) is None:
        return
    scrub_customer(customer_id)
    changes.scrub_logged_changes(customer_id)


def _report_receipt_clash(sale: dict[str, Any], change_id: str) -> None:
    clash = fetch_one(
        "SELECT id FROM sale WHERE origin = ? AND receipt_number = ? AND id <> ?",
        (sale["origin"], sale["receipt_number"], sale["id"]),
    )
    if clash:
        detail = (f"receipt {sale['receipt_number']} was issued twice by one shop "
                  f"(sales {clash['id']} and {sale['id']}), after a restore")  # fmt: skip
        report("receipt_reused", detail, change_id)


def _report_overdraft(customer_id: str, deltas: dict[str, int], change_id: str) -> None:
    customer = fetch_one(
        "SELECT id, ledger_balance, loyalty_points, credit_limit FROM customer WHERE id = ?",
        (customer_id,),
    )
    if deltas.get("loyalty_points", 0) < 0 and customer["loyalty_points"] < 0:
        report("points_below_zero",
               f"customer {customer_id} has {customer['loyalty_points']} points after a merge",
               change_id)  # fmt: skip
    limit = credit_limit_for(customer)
    if deltas.get("ledger_balance", 0) < 0 and limit is not None:
        if -customer["ledger_balance"] > limit:
            report("credit_limit_exceeded",
                   f"customer {customer_id} owes {-customer['ledger_balance']}, "
                   f"past the credit limit {limit}, after a merge", change_id)  # fmt: skip
