"""Loyalty points: an append-only list of earn/redeem/refund/adjust events per customer.

`loyalty_points` on the customer row caches the sum of the events; both change together.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any

from node import changes
from node.clock import now_iso, uuid7
from node.customers import customer_row, find_customer
from node.db import fetch_one
from node.errors import Conflict, Unprocessable
from node.ledger import append_entry
from node.money import exponent
from node.settings import get_settings


def points_for(amount_paid: int, settings: dict[str, Any]) -> int:
    """Points a purchase earns: floor(earn rate x amount paid in major units)."""
    major = Decimal(amount_paid) / (10 ** exponent(settings["currency"]))
    rate = Decimal(str(settings["earn_rate"]))  # at most 4 decimals: str() is exact
    return int((rate * major).to_integral_value(rounding=ROUND_FLOOR))


def add_event(
    change: changes.Change,
    customer_id: str,
    kind: str,
    points: int,
    sale_id: str | None = None,
    description: str = "",
) -> None:
    """Append one points event to the change being recorded and move the cached balance."""
    if points == 0:
        return
    change.insert("loyalty_event", {
        "id": uuid7(), "customer_id": customer_id, "kind": kind, "points": points,
        "sale_id": sale_id, "description": description, "created_at": now_iso(),
    })  # fmt: skip


def check_points(customer: dict[str, Any], points: int) -> None:
    if points > customer["loyalty_points"]:
        raise Conflict(
            f"the customer has {customer['loyalty_points']} points; cannot redeem {points}",
            available_points=customer["loyalty_points"],
        )


def redeem_points(customer_id: str, points: int, sale_id: str | None = None) -> dict[str, Any]:
    """Spend points for a discount, recorded on the sale when one is given."""
    with changes.recording("loyalty.redeemed", customer_id) as change:
        customer = find_customer(customer_id)
        check_points(customer, points)
        settings = get_settings()
        discount = points * settings["point_value"]
        if sale_id is not None:
            apply_discount_to_sale(change, customer_id, sale_id, points, discount, settings)
        else:
            add_event(change, customer_id, "redeem", -points, description="Points redeemed")
    remaining = fetch_one("SELECT loyalty_points FROM customer WHERE id = ?", (customer_id,))
    return {
        "redeemed": points,
        "discount_amount": discount,
        "remaining_points": remaining["loyalty_points"],
    }


def apply_discount_to_sale(
    change: changes.Change,
    customer_id: str,
    sale_id: str,
    points: int,
    discount: int,
    settings: dict[str, Any],
) -> None:
    """Record a points discount on an existing sale; an account sale's debt shrinks by it.

    The sale then earns what it would have earned had the points been redeemed at the till:
    the points earned on the discounted part are taken back (never below zero).
    """
    sale = customer_row("sale", "id, receipt_number, total, discount_amount, refunded_amount, "
                        "payment_method, points_earned", sale_id, customer_id, "sale")  # fmt: skip
    payable = sale["total"] - sale["discount_amount"] - sale["refunded_amount"]
    if discount > payable:
        raise Unprocessable(
            f"a discount of {discount} is more than the {payable} still payable on "
            f"{sale['receipt_number']}",
            [("points", f"at most {payable} of discount fits")],
        )
    paid_before = sale["total"] - sale["discount_amount"]
    earned = min(sale["points_earned"], points_for(paid_before - discount, settings))
    take_back = sale["points_earned"] - earned
    change.insert("sale_discount", {
        "id": uuid7(), "sale_id": sale_id, "discount_amount": discount,
        "points_redeemed": points, "points_not_earned": take_back, "created_at": now_iso(),
    })  # fmt: skip
    receipt = sale["receipt_number"]
    add_event(change, customer_id, "redeem", -points, sale_id, f"Points redeemed on {receipt}")
    balance = fetch_one("SELECT loyalty_points FROM customer WHERE id = ?", (customer_id,))
    taken = min(take_back, max(0, balance["loyalty_points"]))
    add_event(change, customer_id, "adjust", -taken, sale_id,
              f"Points not earned on discount {receipt}")  # fmt: skip
    if sale["payment_method"] == "account" and discount:
        append_entry(change, customer_id, "credit", discount, f"Points discount {receipt}",
                     sale_id)  # fmt: skip


def points_sum(customer_id: str) -> int:
    """The points balance recomputed from the events."""
    row = fetch_one(
        "SELECT COALESCE(SUM(points), 0) AS s FROM loyalty_event WHERE customer_id = ?",
        (customer_id,),
    )
    return row["s"]
