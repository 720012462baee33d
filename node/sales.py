"""Sales and refunds: totals, points earned and redeemed, and account (khata) debits."""

from __future__ import annotations

import re
from typing import Any

from node import changes
from node.clock import now_iso, today, uuid7
from node.customers import find_customer
from node.db import fetch_all, fetch_one, fetch_value, marks
from node.errors import Conflict, NotFound, Unprocessable, invalid
from node.ledger import append_entry, check_credit_limit
from node.loyalty import add_event, check_points, points_for
from node.money import MAX_AMOUNT
from node.settings import get_settings

SALE_COLUMNS = (
    "id, customer_id, receipt_number, total, discount_amount, payment_method, points_earned, "
    "points_redeemed, refunded_amount, points_reversed, points_restored, created_at"
)
RECEIPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_/.]{0,49}")


def render(sale: dict[str, Any]) -> dict[str, Any]:
    sale = dict(sale)
    sale["amount_paid"] = sale["total"] - sale["discount_amount"] - sale["refunded_amount"]
    sale["refunds"] = fetch_all(
        "SELECT id, amount, points_reversed, points_shortfall, points_restored, created_at "
        "FROM refund WHERE sale_id = ? ORDER BY created_at, id",
        (sale["id"],),
    )
    return sale


def get_sale(sale_id: str) -> dict[str, Any]:
    sale = fetch_one(f"SELECT {SALE_COLUMNS} FROM sale WHERE id = ?", (sale_id,))
    if sale is None:
        raise NotFound(f"no sale with id {sale_id}")
    return render(sale)


def list_sales(customer_id: str, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    find_customer(customer_id)
    total = fetch_one("SELECT COUNT(*) AS n FROM sale WHERE customer_id = ?", (customer_id,))["n"]
    rows = fetch_all(
        f"SELECT {SALE_COLUMNS} FROM sale WHERE customer_id = ? "
        "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        (customer_id, limit, (page - 1) * limit),
    )
    return [render(r) for r in rows], total


# The most digits a day's number of ours is read from: a number typed in with more (up to the
# 50 characters a receipt number may have) is kept, but never counted on from.
RECEIPT_DIGITS = 18


def next_receipt_number() -> str:
    """REC-YYYYMMDD-NNN: the day's next number in this shop (NNN grows past 999), one no
    sale of the shop holds, whatever numbers were typed in for earlier sales."""
    prefix = f"REC-{today():%Y%m%d}-"  # the shop's day, not UTC's
    origins = changes.shop_origins()
    # A range on the (origin, receipt_number) index: "REC-20250518-" <= r < "REC-20250518."
    # ('.' follows '-'); the greatest number by value ("0005" is 5), of at most RECEIPT_DIGITS
    # digits, so the next one stays a short number.
    last = fetch_value(
        f"SELECT MAX(CAST(substr(receipt_number, ?) AS INTEGER)) FROM sale "
        f"WHERE origin IN ({marks(origins)}) AND receipt_number >= ? AND receipt_number < ? "
        "AND substr(receipt_number, ?) GLOB '[0-9]*' "
        "AND substr(receipt_number, ?) NOT GLOB '*[^0-9]*' AND length(receipt_number) <= ?",
        (len(prefix) + 1, *origins, prefix, prefix[:-1] + ".", len(prefix) + 1,
         len(prefix) + 1, len(prefix) + RECEIPT_DIGITS),
    )  # fmt: skip
    number = (last or 0) + 1
    while receipt_taken(candidate := f"{prefix}{number:03d}"):  # typed in as it is
        number += 1
    return candidate


def receipt_taken(receipt_number: str) -> bool:
    origins = changes.shop_origins()
    return fetch_one(
        f"SELECT 1 FROM sale WHERE origin IN ({marks(origins)}) AND receipt_number = ?",
        (*origins, receipt_number),
    ) is not None


def record_sale(
    customer_id: str,
    total: int,
    payment_method: str,
    redeem_points: int = 0,
    receipt_number: str | None = None,
    override_credit_limit: bool = False,
) -> dict[str, Any]:
    """Record a purchase: redeem, earn, totals and the account debit in one transaction."""
    with changes.recording("sale.recorded") as change:
        customer = find_customer(customer_id)
        settings = get_settings()
        discount = redeem_points * settings["point_value"]
        if discount > total:
            raise invalid(
                "redeem_points",
                f"{redeem_points} points are worth {discount}, more than the total {total}",
            )
        check_points(customer, redeem_points)
        amount_paid = total - discount
        if payment_method == "account" and not override_credit_limit:
            check_credit_limit(customer, amount_paid)
        if receipt_number is None:
            receipt_number = next_receipt_number()
        elif not RECEIPT.fullmatch(receipt_number):
            raise invalid("receipt_number", "letters, digits and - _ / . only, at most 50")
        elif receipt_taken(receipt_number):
            raise Conflict(f"receipt number {receipt_number} is already used in this shop")
        sale_id, earned = uuid7(), points_for(amount_paid, settings)
        if earned > MAX_AMOUNT:  # the most a fact carries (sync/protocol.py): central refuses more
            raise invalid("total", f"would earn {earned} points at the shop's earn rate, "
                                   f"more than the {MAX_AMOUNT} one sale can earn")  # fmt: skip
        change.entity_id = sale_id
        change.insert("sale", {
            "id": sale_id, "origin": changes.origin_id(), "customer_id": customer_id,
            "receipt_number": receipt_number, "total": total, "discount_amount": discount,
            "payment_method": payment_method, "points_earned": earned,
            "points_redeemed": redeem_points, "created_at": now_iso(),
        })  # fmt: skip
        add_event(change, customer_id, "redeem", -redeem_points, sale_id,
                  f"Redeemed on {receipt_number}")  # fmt: skip
        add_event(change, customer_id, "earn", earned, sale_id, f"Earned on {receipt_number}")
        if payment_method == "account" and amount_paid:
            append_entry(change, customer_id, "debit", amount_paid, f"Sale {receipt_number}",
                         sale_id)  # fmt: skip
    return get_sale(sale_id)


def refund_sale(sale_id: str, amount: int | None = None) -> dict[str, Any]:
    """Refund all (amount None) or part of a sale, reversing points in proportion."""
    with changes.recording("sale.refunded") as change:
        sale = fetch_one(f"SELECT {SALE_COLUMNS} FROM sale WHERE id = ?", (sale_id,))
        if sale is None:
            raise NotFound(f"no sale with id {sale_id}")
        paid = sale["total"] - sale["discount_amount"]
        refundable = paid - sale["refunded_amount"]
        already = fetch_one("SELECT 1 FROM refund WHERE sale_id = ?", (sale_id,)) is not None
        # Below zero only after a merge of two shops' offline refunds of one sale.
        if refundable <= 0 and (paid > 0 or already):
            raise Conflict(f"sale {sale['receipt_number']} is already fully refunded")
        if amount is None:
            amount = refundable
        elif amount > refundable:
            raise Unprocessable(
                f"cannot refund {amount}: at most {refundable} of this sale is left to refund",
                [("amount", f"must be at most {refundable}")],
            )
        refunded = sale["refunded_amount"] + amount
        # Cumulative targets: several partial refunds reverse exactly what one full one would.
        share = (lambda points: points * refunded // paid) if paid else (lambda points: points)
        to_restore = share(sale["points_redeemed"]) - sale["points_restored"]
        to_reverse = max(0, share(sale["points_earned"]) - sale["points_reversed"])
        customer_id, receipt = sale["customer_id"], sale["receipt_number"]
        add_event(change, customer_id, "refund", to_restore, sale_id,
                  f"Redeemed points back, {receipt}")  # fmt: skip
        balance = fetch_one("SELECT loyalty_points FROM customer WHERE id = ?", (customer_id,))
        reversed_now = min(to_reverse, max(0, balance["loyalty_points"]))
        add_event(change, customer_id, "refund", -reversed_now, sale_id,
                  f"Points reversed, {receipt}")  # fmt: skip
        refund_id = change.entity_id = uuid7()
        change.insert("refund", {
            "id": refund_id, "sale_id": sale_id, "amount": amount,
            "points_reversed": reversed_now, "points_shortfall": to_reverse - reversed_now,
            "points_restored": to_restore, "created_at": now_iso(),
        })  # fmt: skip
        if sale["payment_method"] == "account" and amount:
            append_entry(change, customer_id, "credit", amount, f"Refund {receipt}", sale_id)
    refund = fetch_one("SELECT * FROM refund WHERE id = ?", (refund_id,))
    refund["sale"] = get_sale(sale_id)
    return refund
