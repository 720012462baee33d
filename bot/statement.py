"""A customer's ledger as a CSV statement, oldest entry first, amounts in major units."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, tzinfo
from typing import Any

from bot.amounts import Currency, decimal_text

COLUMNS = ["date", "type", "amount", "balance_after", "description", "reference_id", "entry_id"]

# OWASP's advice against CSV injection: text that could start a formula gets a leading `'`,
# which spreadsheets read as "this is text".
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: Any) -> str:
    """Text from the node as a cell a spreadsheet shows and never runs. Only the amounts,
    which the bot writes itself, are numbers."""
    text = str(value or "")
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def statement_csv(entries: list[dict[str, Any]], currency: Currency) -> bytes:
    """CSV bytes (UTF-8 with BOM, so spreadsheet programs read names correctly)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for entry in reversed(entries):  # the API lists newest first; statements read forward
        writer.writerow([
            text_cell(entry.get("created_at")),
            text_cell(entry.get("type")),
            decimal_text(int(entry.get("amount") or 0), currency),
            decimal_text(int(entry.get("balance_after") or 0), currency),
            text_cell(entry.get("description")),
            text_cell(entry.get("reference_id")),
            text_cell(entry.get("id")),
        ])
    return ("\ufeff" + out.getvalue()).encode("utf-8", "backslashreplace")


def statement_filename(customer: dict[str, Any], zone: tzinfo | None) -> str:
    """'statement-ann-lee-2025-05-18.csv', dated the shop's day."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(customer.get("name") or "customer").lower()).strip("-")
    return f"statement-{slug or 'customer'}-{datetime.now(zone).date().isoformat()}.csv"
