"""How customers, balances and ledger entries read in the chat (plain text, no markup)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from bot.amounts import Currency, format_amount


def balance_phrase(balance: int, currency: Currency) -> str:
    """'owes $50.00', 'in credit $12.00' or 'owes nothing' (negative balance = owes)."""
    if balance < 0:
        return f"owes {format_amount(-balance, currency)}"
    if balance > 0:
        return f"in credit {format_amount(balance, currency)}"
    return "owes nothing"


def points_phrase(points: int, point_value: int, currency: Currency) -> str:
    """'450 points (worth $45.00)'."""
    noun = "point" if points == 1 else "points"
    return f"{points} {noun} (worth {format_amount(points * point_value, currency)})"


def contact(customer: dict[str, Any]) -> str:
    return str(customer.get("phone") or customer.get("email") or "")


def customer_label(customer: dict[str, Any], width: int = 48) -> str:
    """A button label that tells namesakes apart: 'Ann Lee · +15550100'."""
    label = " · ".join(p for p in (str(customer.get("name") or "?"), contact(customer)) if p)
    return label if len(label) <= width else label[: width - 1] + "…"


def customer_line(customer: dict[str, Any], currency: Currency) -> str:
    """'Ann Lee · +15550100 · owes $20.00 · 450 points'."""
    balance = balance_phrase(int(customer.get("ledger_balance") or 0), currency)
    points = f"{int(customer.get('loyalty_points') or 0)} points"
    return " · ".join([customer_label(customer, width=200), balance, points])


def shop_zone(settings: dict[str, Any]) -> tzinfo | None:
    """The shop's time zone as the node's settings name it; None (this machine's) from a
    node too old to say."""
    try:
        return ZoneInfo(str(settings["timezone"]))
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        return None


def when(timestamp: str | None, zone: tzinfo | None) -> str:
    """An RFC 3339 UTC time in the shop's local time: '18 May 14:30'."""
    try:
        moment = datetime.fromisoformat(str(timestamp)).astimezone(zone)
    except ValueError:
        return str(timestamp or "")
    if moment.year != datetime.now(zone).year:
        return moment.strftime("%d %b %Y")
    return moment.strftime("%d %b %H:%M")


def entry_line(entry: dict[str, Any], currency: Currency, zone: tzinfo | None) -> str:
    """'18 May 14:30 · Payment received · paid $10.00 → owes $50.00'."""
    amount = format_amount(int(entry.get("amount") or 0), currency)
    movement = f"paid {amount}" if entry.get("type") == "credit" else f"charged {amount}"
    after = balance_phrase(int(entry.get("balance_after") or 0), currency)
    description = str(entry.get("description") or "")
    parts = [when(entry.get("created_at"), zone), description, f"{movement} → {after}"]
    return " · ".join(p for p in parts if p)


def balance_text(customer: dict[str, Any], entries: list[dict], settings: dict[str, Any]) -> str:
    """The /balance answer: owes or in credit, points and their value, the last entries."""
    currency = Currency.of(settings)
    balance = int(customer.get("ledger_balance") or 0)
    points = int(customer.get("loyalty_points") or 0)
    lines = [
        customer_label(customer, width=80),
        sentence(balance_phrase(balance, currency)),
        f"Points: {points_phrase(points, int(settings.get('point_value') or 0), currency)}",
    ]
    if entries:
        zone = shop_zone(settings)
        lines += ["", "Last entries:"] + [entry_line(e, currency, zone) for e in entries]
    return "\n".join(lines)


def ledger_text(customer: dict[str, Any], entries: list[dict], settings: dict[str, Any]) -> str:
    """The /ledger answer: recent entries, newest first, each with the balance after it."""
    currency = Currency.of(settings)
    name = str(customer.get("name") or "?")
    if not entries:
        return f"{name} has no ledger entries yet."
    balance = balance_phrase(int(customer.get("ledger_balance") or 0), currency)
    lines = [f"Ledger of {name} (now {balance}), newest first:"]
    lines += [entry_line(e, currency, shop_zone(settings)) for e in entries]
    return "\n".join(lines)


def dues_text(report: dict[str, Any], currency: Currency) -> str:
    """Customers who owe most, how much and for how long, with the ageing buckets."""
    customers = report.get("customers") or []
    if not customers:
        return "Nobody owes anything right now."
    total = format_amount(int(report.get("total_owed") or 0), currency)
    lines = [f"Who owes most (total owed {total}):"]
    for number, row in enumerate(customers, start=1):
        owed = format_amount(int(row.get("owed") or 0), currency)
        days = int(row.get("age_days") or 0)
        since = "today" if days == 0 else f"for {days} day{'s' if days != 1 else ''}"
        lines.append(f"{number}. {row.get('name') or '?'} owes {owed} {since}")
    buckets = report.get("buckets") or {}
    if buckets:
        ages = [f"{k} days {format_amount(int(v or 0), currency)}" for k, v in buckets.items()]
        lines += ["", "By age: " + " · ".join(ages)]
    return "\n".join(lines)


def status_text(status: dict[str, Any]) -> str:
    """The /status answer: the node, its last backup (or why there is none), sync, size;
    times in the shop's zone."""
    zone = shop_zone(status)
    backup = status.get("backup") or {}
    lines = [f"{status.get('shop_name')} · shopnode {status.get('version')}"]
    if backup.get("last_at"):
        lines.append(f"Last backup: {when(backup['last_at'], zone)} ({ago(backup['last_at'])}), "
                     f"{megabytes(backup.get('size_bytes'))}, {backup.get('file')}")  # fmt: skip
    elif backup.get("every_hours"):
        lines.append(f"No backup yet; the first is due {when(backup.get('next_at'), zone)}.")
    else:
        lines.append("No backup yet, and none scheduled (set [backup] dir and every_hours).")
    if backup.get("last_error"):
        lines.append(f"⚠ The latest backup failed ({when(backup.get('last_error_at'), zone)}): "
                     f"{backup['last_error']}")  # fmt: skip
    lines.append(sync_line(status.get("sync") or {}, zone))
    lines.append(f"Database: {megabytes(status.get('database_size_bytes'))}")
    return "\n".join(lines)


def sync_line(sync: dict[str, Any], zone: tzinfo | None) -> str:
    if not sync.get("enabled"):
        return "Sync: off"
    last = sync.get("last_success_at")
    parts = [f"last success {when(last, zone)}" if last else "no success yet"]
    if sync.get("last_error"):
        parts.append("the latest round failed")
    waiting = int(sync.get("push_queue_depth") or 0)
    parts.append(f"{waiting} change{'s' if waiting != 1 else ''} waiting to be sent")
    return "Sync: " + "; ".join(parts)


def megabytes(size: Any) -> str:
    return f"{int(size or 0) / 1_000_000:.1f} MB"


def ago(timestamp: str) -> str:
    """'5 min ago', '3 h ago', '2 days ago'."""
    seconds = (datetime.now(UTC) - datetime.fromisoformat(timestamp)).total_seconds()
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // (24 * 60)} days ago"


def sentence(text: str) -> str:
    """'the amount must be more than zero' -> 'The amount must be more than zero.'"""
    text = str(text).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


# -- what customers read (bot.customers, bot.receipts, bot.reminders) ------------------------


def your_balance(balance: int, currency: Currency) -> str:
    """'you now owe $50.00', 'you have $12.00 in credit' or 'you owe nothing'."""
    if balance < 0:
        return f"you now owe {format_amount(-balance, currency)}"
    if balance > 0:
        return f"you have {format_amount(balance, currency)} in credit"
    return "you owe nothing"


def receipt_text(claim: dict[str, Any], currency: Currency) -> str:
    """'Corner Store: payment received $50.00 — you now owe $120.00 · 340 points'."""
    amount = format_amount(int(claim.get("amount") or 0), currency)
    receipt = f" ({claim['receipt_number']})" if claim.get("receipt_number") else ""
    points = int(claim.get("points") or 0)
    what = {
        "sale.recorded": f"purchase of {amount}{receipt}",
        "sale.refunded": f"refund of {amount}{receipt}",
        "ledger.credit": f"payment received {amount}",
        "loyalty.redeemed": f"{-points} points redeemed",
    }.get(str(claim.get("kind")), "your account changed")
    if points > 0:
        what += f", +{points} points"
    balance = your_balance(int(claim.get("ledger_balance") or 0), currency)
    total = int(claim.get("loyalty_points") or 0)
    return f"{claim.get('shop_name') or 'Shop'}: {what} — {balance} · {total} points"


def reminder_text(claim: dict[str, Any], currency: Currency) -> str:
    """A short, polite reminder with the shop's name, the amount and for how long."""
    owed = format_amount(int(claim.get("owed") or 0), currency)
    days = int(claim.get("age_days") or 0)
    since = f", outstanding for {days} day{'s' if days != 1 else ''}" if days else ""
    return (
        f"Hello from {claim.get('shop_name') or 'the shop'}. A friendly reminder: your "
        f"balance is {owed}{since}. Please settle it when it suits you — thank you! "
        "Send /balance to see your account."
    )
