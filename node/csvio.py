"""CSV import and export of customers and the ledger (`shopnode import/export`).

Import validates each row with the API's own rules and reports rejected rows by number.
Each imported row leaves a fingerprint (its content plus how many identical rows came
before it in the file), so running the same import again imports nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from node import customers, files
from node.clock import now_iso
from node.db import database
from node.errors import DomainError, Invalid
from node.models import PROFILE_COLUMNS, ImportMark
from node.spreadsheet import safe_row, unsafe_cell
from node.validation import is_text, parse_body

# A row is a customer's profile; the order makes each row's fingerprint (do not change it).
IMPORT_COLUMNS = PROFILE_COLUMNS
CUSTOMER_EXPORT = ("id", "name", "email", "phone", "address", "notes", "tags", "loyalty_points",
                   "total_spent", "total_orders", "ledger_balance", "credit_limit", "created_at")
LEDGER_EXPORT = ("customer_id", "customer_name", "entry_id", "type", "amount", "balance_after",
                 "description", "reference_id", "reverses_id", "created_at")  # fmt: skip
PAGE = 1000

Progress = Callable[[int, int | None], None]


def terminal_progress(label: str) -> Progress | None:
    """A one-line progress display on a terminal; nothing when output is redirected."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int | None) -> None:
        of = f"/{total}" if total else ""
        end = "\n" if total is not None and done >= total else ""
        print(f"\r{label} {done}{of}", end=end, file=sys.stderr, flush=True)

    return show


def _row_fields(row: dict[str, str]) -> dict[str, Any]:
    """CSV text to API field values: empty cells are absent, tags split on ';'."""
    fields: dict[str, Any] = {}
    for column in IMPORT_COLUMNS:
        value = unsafe_cell((row.get(column) or "").strip())
        if not value:
            continue
        if column == "tags":
            fields[column] = [t for t in (p.strip() for p in value.split(";")) if t]
        elif column == "credit_limit":
            fields[column] = int(value) if value.lstrip("-").isdigit() else value
        else:
            fields[column] = value
    return fields


def import_customers(path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Import customers from CSV; returns counts and the rejected rows with reasons."""
    # Bytes that are not UTF-8 become lone surrogates, which validation rejects by field and
    # row, instead of the whole import stopping at the first one.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        total = sum(1 for _ in handle) - 1
    imported, skipped, rejected = 0, 0, []
    seen: Counter[str] = Counter()
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        unknown = set(reader.fieldnames or []) - set(IMPORT_COLUMNS)
        bad_headers = [c for c in (reader.fieldnames or []) if not is_text(c)]
        if bad_headers:
            raise Invalid([("header", "is not UTF-8 text; save the file as UTF-8 CSV")])
        if "name" not in (reader.fieldnames or []):
            raise Invalid([("name", "the CSV needs a header row with at least a name column")])
        if unknown:
            raise Invalid([(c, "unknown column") for c in sorted(unknown)])
        for number, row in enumerate(reader, start=2):  # row 1 is the header
            content = "\x1f".join((row.get(c) or "").strip() for c in IMPORT_COLUMNS)
            seen[content] += 1
            mark = hashlib.sha256(
                f"{content}\x1e{seen[content]}".encode("utf-8", "surrogateescape")
            ).hexdigest()
            if ImportMark.select().where(ImportMark.fingerprint == mark).exists():
                skipped += 1
            else:
                try:
                    fields = parse_body(_row_fields(row), customers.PROFILE_FIELDS, ["name"])
                    with database.atomic():
                        created = customers.create_customer(fields)
                        ImportMark.insert(fingerprint=mark, customer_id=created["id"],
                                          imported_at=now_iso()).execute()  # fmt: skip
                    imported += 1
                except DomainError as error:
                    rejected.append({"row": number, "reason": error.detail})
            if progress and (number - 1) % 100 == 0:
                progress(number - 1, total)
    if progress:
        progress(total, total)
    return {"imported": imported, "skipped": skipped, "rejected": rejected}


def _stream(sql: str) -> Iterator[dict[str, Any]]:
    """Rows of one query, fetched a page at a time (WAL lets the shop keep writing)."""
    cursor = database.execute_sql(sql)
    names = [d[0] for d in cursor.description]
    while rows := cursor.fetchmany(PAGE):
        for row in rows:
            yield dict(zip(names, row, strict=True))


def export_customers(path: Path, progress: Progress | None = None) -> int:
    sql = "SELECT * FROM customer WHERE anonymized_at IS NULL ORDER BY created_at, id"
    return _write(path, CUSTOMER_EXPORT, _stream(sql), progress, lambda r: {
        **r, "tags": ";".join(customers.render(r)["tags"])})  # fmt: skip


def export_ledger(path: Path, progress: Progress | None = None) -> int:
    sql = (
        "SELECT c.name AS customer_name, "
        "e.id AS entry_id, e.type, e.amount, e.description, e.reference_id, e.reverses_id, "
        "e.created_at, e.customer_id, SUM(CASE e.type WHEN 'credit' THEN e.amount "
        "ELSE -e.amount END) OVER (PARTITION BY e.customer_id ORDER BY e.created_at, e.id) "
        "AS balance_after FROM ledger_entry e JOIN customer c ON c.id = e.customer_id "
        "ORDER BY e.customer_id, e.created_at, e.id"
    )
    return _write(path, LEDGER_EXPORT, _stream(sql), progress, lambda r: r)


def _write(path: Path, columns: tuple[str, ...], rows: Iterator[dict[str, Any]],
           progress: Progress | None, shape: Callable[[dict], dict]) -> int:  # fmt: skip
    count = 0
    # backslashreplace: a lone surrogate stored before the API refused them shows as
    # \udfff instead of ending the export half-way.
    with files.open_private(path, errors="backslashreplace") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(safe_row(shape(row)))
            count += 1
            if progress and count % 1000 == 0:
                progress(count, None)
    if progress:
        progress(count, count)
    return count
