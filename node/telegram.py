"""Customers on Telegram: one-time invites, links, and the receipts and reminders sent.

All of it is this node's own (never in the change log, so never synced) and is erased with
the customer (node/customers.py scrub_customer). The bot reaches it through the API like
any client; the rules live here:

- an invite code is random (128 bits), stored only as its SHA-256, single-use, expires
  after INVITE_DAYS, and a new invite for a customer voids their older ones; any code that
  is not good now (made up, used, expired, its customer gone) gets the same NotFound;
- a customer has at most one linked Telegram account and an account links one customer;
- a receipt is claimed once per change (the UNIQUE change_id), only for a linked customer
  with receipts on, and only for facts logged and made after the link;
- a reminder is claimed at most once per customer per `every_days`, in one IMMEDIATE
  transaction, so two owners asking at once send one.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from node import events
from node.clock import iso, now, now_iso, uuid7
from node.customers import find_customer
from node.db import database, execute, fetch_all, fetch_one, get_meta, set_meta
from node.errors import Conflict, NotFound, Unprocessable
from node.reports import age_days, owing_since

INVITE_DAYS = 7
# Sent-message records only need to outlive the reminder interval and a bot's catch-up.
KEEP_MESSAGES_DAYS = 90
NO_INVITE = "this invite code is not valid; ask the shop for a new one"
RECEIPT_KINDS = ("sale.recorded", "sale.refunded", "ledger.credit", "loyalty.redeemed")
CURSOR_KEY = "telegram_receipts_cursor"


def _hash(code: str) -> str:
    # The code has 128 random bits: a fast hash is safe, there is nothing to brute-force.
    return hashlib.sha256(code.encode()).hexdigest()


def _link_row(where: str, value: Any) -> dict[str, Any] | None:
    return fetch_one(
        "SELECT customer_id, telegram_user_id, receipts, linked_at, linked_cursor "
        f"FROM telegram_link WHERE {where} = ?",
        (value,),
    )


def render_link(row: dict[str, Any]) -> dict[str, Any]:
    return {"customer_id": row["customer_id"], "telegram_user_id": row["telegram_user_id"],
            "receipts": bool(row["receipts"]), "linked_at": row["linked_at"]}  # fmt: skip


# -- invites and links ---------------------------------------------------------------------


def create_invite(customer_id: str, relink: bool = False) -> dict[str, Any]:
    """A new one-time code for the customer; Conflict if they are linked (unless `relink`)."""
    with database.atomic():
        find_customer(customer_id)
        linked = _link_row("customer_id", customer_id)
        if linked and not relink:
            raise Conflict("this customer's Telegram account is already linked",
                           linked_at=linked["linked_at"])  # fmt: skip
        stamp = now()
        execute("DELETE FROM telegram_invite WHERE customer_id = ? OR expires_at < ? "
                "OR used_at IS NOT NULL", (customer_id, iso(stamp)))  # fmt: skip
        code = secrets.token_urlsafe(16)
        expires = iso(stamp + timedelta(days=INVITE_DAYS))
        execute(
            "INSERT INTO telegram_invite(code_hash, customer_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (_hash(code), customer_id, iso(stamp), expires),
        )
    return {"code": code, "customer_id": customer_id, "expires_at": expires}


def _valid_invite(code: str) -> dict[str, Any]:
    """The invite a code opens now, with its customer; the same NotFound for any other."""
    invite = fetch_one(
        "SELECT i.code_hash, i.customer_id, c.phone_digits FROM telegram_invite i "
        "JOIN customer c ON c.id = i.customer_id WHERE i.code_hash = ? AND i.used_at IS NULL "
        "AND i.expires_at > ? AND c.anonymized_at IS NULL",
        (_hash(code), now_iso()),
    )
    if invite is None:
        raise NotFound(NO_INVITE)
    return invite


def check_invite(code: str) -> dict[str, Any]:
    """What a customer confirms before linking: the last 2 digits of the phone on file."""
    digits = _valid_invite(code)["phone_digits"] or ""
    return {"phone_last_digits": digits[-2:] if len(digits) >= 2 else None}


def link_account(code: str, telegram_user_id: int) -> dict[str, Any]:
    """Use the code: link the customer to this Telegram account, replacing older links of
    either."""
    with database.atomic():
        invite = _valid_invite(code)
        customer_id = invite["customer_id"]
        stamp = now_iso()
        execute("UPDATE telegram_invite SET used_at = ? WHERE code_hash = ?",
                (stamp, invite["code_hash"]))  # fmt: skip
        execute("DELETE FROM telegram_link WHERE customer_id = ? OR telegram_user_id = ?",
                (customer_id, telegram_user_id))  # fmt: skip
        execute(
            "INSERT INTO telegram_link(customer_id, telegram_user_id, receipts, linked_at, "
            "linked_cursor) VALUES (?, ?, 1, ?, ?)",
            (customer_id, telegram_user_id, stamp, events.head()),
        )
    return link_of(telegram_user_id)


def link_of(telegram_user_id: int) -> dict[str, Any]:
    """The customer this Telegram account is linked to; NotFound if none."""
    row = _link_row("telegram_user_id", telegram_user_id)
    if row is None:
        raise NotFound("this Telegram account is not linked to a customer")
    return render_link(row)


def set_receipts(telegram_user_id: int, on: bool) -> dict[str, Any]:
    if not execute("UPDATE telegram_link SET receipts = ? WHERE telegram_user_id = ?",
                   (int(on), telegram_user_id)):  # fmt: skip
        raise NotFound("this Telegram account is not linked to a customer")
    return link_of(telegram_user_id)


def unlink(telegram_user_id: int) -> None:
    """Erase the link (the customer's own /stop)."""
    if not execute("DELETE FROM telegram_link WHERE telegram_user_id = ?", (telegram_user_id,)):
        raise NotFound("this Telegram account is not linked to a customer")


# -- receipts ------------------------------------------------------------------------------


def receipts_cursor() -> int:
    """Where the bot's receipts left off in the events feed. Before it has stored one: the
    earliest link's cursor (no receipt is due for anything older), else the feed's head."""
    stored = get_meta(CURSOR_KEY)
    if stored is not None:
        return int(stored)
    row = fetch_one("SELECT MIN(linked_cursor) AS cursor FROM telegram_link")
    return row["cursor"] if row["cursor"] is not None else events.head()


def set_receipts_cursor(cursor: int) -> int:
    """Receipts are handled up to `cursor`; never past the feed's head, or the receipts of
    the events that get those cursors later would never be sent."""
    head = events.head()
    if cursor > head:
        raise Unprocessable(f"cursor {cursor} is past the events feed's head ({head}): the "
                            "receipts of the events to come would never be sent",
                            [("cursor", f"at most {head}")])  # fmt: skip
    set_meta(CURSOR_KEY, str(cursor))
    return cursor


def claim_receipt(change_id: str) -> dict[str, Any]:
    """Claim the receipt for one change: {"send": true, ...what it says} once, when it is
    due; {"send": false} for a change that needs none or was claimed already."""
    with database.atomic():
        event = events.change_at(change_id)
        fact = receipt_fact(event) if event else None
        if fact is None:
            return {"send": False}
        link = _link_row("customer_id", fact["customer_id"])
        if (link is None or not link["receipts"] or event["cursor"] <= link["linked_cursor"]
                or fact["created_at"] < link["linked_at"]):  # fmt: skip
            return {"send": False}
        forget_old_messages()
        message_id = uuid7()
        if not execute(
            "INSERT INTO telegram_message(id, kind, customer_id, change_id, sent_at) "
            "VALUES (?, 'receipt', ?, ?, ?) ON CONFLICT(change_id) DO NOTHING",
            (message_id, fact["customer_id"], change_id, now_iso()),
        ):
            return {"send": False}
        customer = find_customer(fact["customer_id"])
        return {
            "send": True,
            "message_id": message_id,
            "telegram_user_id": link["telegram_user_id"],
            **fact,
            "ledger_balance": customer["ledger_balance"],
            "loyalty_points": customer["loyalty_points"],
        }


def receipt_fact(event: dict[str, Any]) -> dict[str, Any] | None:
    """What a receipt tells of a change: its kind, customer, amount, points, receipt
    number and when it happened; None for changes that get no receipt."""
    kind, body = event["kind"], event["body"]
    if kind not in RECEIPT_KINDS:
        return None
    points = sum(e["points"] for e in body.get("loyalty_event", []))
    if kind == "sale.recorded":
        sale = body["sale"][0]
        return _fact(kind, sale["customer_id"], sale["total"] - sale["discount_amount"],
                     points, sale["receipt_number"], sale["created_at"])  # fmt: skip
    if kind == "sale.refunded":
        refund = body["refund"][0]
        sale = fetch_one("SELECT customer_id, receipt_number FROM sale WHERE id = ?",
                         (refund["sale_id"],))  # fmt: skip
        if sale is None:
            return None
        return _fact(kind, sale["customer_id"], refund["amount"], points,
                     sale["receipt_number"], refund["created_at"])  # fmt: skip
    row = (body.get("ledger_entry") or body.get("loyalty_event"))[0]
    amount = row["amount"] if kind == "ledger.credit" else 0
    return _fact(kind, row["customer_id"], amount, points, None, row["created_at"])


def _fact(kind: str, customer_id: str, amount: int, points: int, receipt: str | None,
          created_at: str) -> dict[str, Any]:  # fmt: skip
    return {"kind": kind, "customer_id": customer_id, "amount": amount, "points": points,
            "receipt_number": receipt, "created_at": created_at}  # fmt: skip


def forget_old_messages() -> None:
    execute("DELETE FROM telegram_message WHERE sent_at < ?",
            (iso(now() - timedelta(days=KEEP_MESSAGES_DAYS)),))  # fmt: skip


def release_message(message_id: str) -> None:
    """Forget a claimed message the bot could not deliver, so it is claimed again later."""
    if not execute("DELETE FROM telegram_message WHERE id = ?", (message_id,)):
        raise NotFound(f"no message {message_id}")


# -- reminders -----------------------------------------------------------------------------


def claim_reminder(customer_id: str, every_days: int) -> dict[str, Any]:
    """Claim a reminder to a linked customer who owes: NotFound if not linked, Conflict if
    they owe nothing or were reminded less than `every_days` ago (whoever asked)."""
    with database.atomic():
        customer = find_customer(customer_id)
        link = _link_row("customer_id", customer_id)
        if link is None:
            raise NotFound("this customer has not linked a Telegram account")
        if customer["ledger_balance"] >= 0:
            raise Conflict("this customer owes nothing")
        stamp = now()
        last = fetch_one(
            "SELECT MAX(sent_at) AS at FROM telegram_message WHERE customer_id = ? "
            "AND kind = 'reminder'", (customer_id,))["at"]  # fmt: skip
        if last and last > iso(stamp - timedelta(days=every_days)):
            raise Conflict(f"this customer was reminded less than {every_days} days ago",
                           reminded_at=last)  # fmt: skip
        forget_old_messages()
        message_id = uuid7()
        execute("INSERT INTO telegram_message(id, kind, customer_id, sent_at) "
                "VALUES (?, 'reminder', ?, ?)", (message_id, customer_id, iso(stamp)))  # fmt: skip
        return {"message_id": message_id, "telegram_user_id": link["telegram_user_id"],
                **owing(customer_id, -customer["ledger_balance"])}  # fmt: skip


def owing(customer_id: str, owed: int) -> dict[str, Any]:
    since = owing_since(customer_id)
    return {"customer_id": customer_id, "owed": owed, "owing_since": since,
            "age_days": age_days(since) if since else 0}  # fmt: skip


def overdue(min_amount: int, after_days: int) -> list[dict[str, Any]]:
    """Linked customers owing more than `min_amount` for at least `after_days` days."""
    rows = fetch_all(
        "SELECT c.id, c.ledger_balance FROM telegram_link l JOIN customer c "
        "ON c.id = l.customer_id WHERE c.anonymized_at IS NULL AND -c.ledger_balance > ? "
        "ORDER BY c.ledger_balance, c.id",
        (min_amount,),
    )
    found = [owing(row["id"], -row["ledger_balance"]) for row in rows]
    return [row for row in found if row["age_days"] >= after_days]
