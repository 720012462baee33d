"""A customer's ledger as a CSV statement, oldest entry first, amounts in major units."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from typing import Any

from node.money import exponent
from node.spreadsheet import safe_row

COLUMNS = ["date", "type", "amount", "balance_after", "description", "reference_id", "entry_id"]


def decimal_text(minor: int, currency: str) -> str:
    """Minor units as a plain decimal a spreadsheet reads exactly: -5025 USD -> '-50.25'."""
    digits = exponent(currency)
    whole, fraction = divmod(abs(minor), 10**digits)
    sign = "-" if minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{digits}d}" if digits else f"{sign}{whole}"


def statement_csv(entries: list[dict[str, Any]], currency: str) -> bytes:
    """CSV bytes (UTF-8 with BOM, so spreadsheet programs read names correctly)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for entry in reversed(entries):  # the API lists newest first; statements read forward
        writer.writerow(safe_row(
            [
                entry.get("created_at", ""),
                entry.get("type", ""),
                decimal_text(int(entry.get("amount") or 0), currency),
                decimal_text(int(entry.get("balance_after") or 0), currency),
                entry.get("description") or "",
                entry.get("reference_id") or "",
                entry.get("id") or "",
            ]
        ))
    return ("\ufeff" + out.getvalue()).encode("utf-8", "backslashreplace")


def statement_filename(customer: dict[str, Any]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", str(customer.get("name") or "customer").lower()).strip("-")
    return f"statement-{slug or 'customer'}-{date.today().isoformat()}.csv"
