"""CSV import and export of customers and the ledger (`shopnode import/export`).

Import validates each row with the API's own rules and reports rejected rows by number.
Each imported row leaves a fingerprint (its content plus how many identical rows came
before it in the file), so running the same import again imports nothing twice.

Rows go in batches, each one transaction holding the customers, their change-log entries
and their fingerprints, so an import stopped at any point leaves whole batches and a re-run
completes it. A batch is sized to hold the write lock for about BATCH_SECONDS: a node
serving the same database meanwhile waits that long at most for its own writes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import customers, files
from node.clock import now_iso
from node.db import database, fetch_all, insert_rows, marks
from node.errors import DomainError, Invalid
from node.models import PROFILE_COLUMNS
from node.spreadsheet import safe_row, unsafe_cell
from node.validation import is_text, parse_body

# A row is a customer's profile; the order makes each row's fingerprint (do not change it).
IMPORT_COLUMNS = PROFILE_COLUMNS
CUSTOMER_EXPORT = ("id", "name", "email", "phone", "address", "notes", "tags", "loyalty_points",
                   "total_spent", "total_orders", "ledger_balance", "credit_limit", "created_at")
LEDGER_EXPORT = ("customer_id", "customer_name", "entry_id", "type", "amount", "balance_after",
                 "description", "reference_id", "reverses_id", "created_at")  # fmt: skip
PAGE = 1000
# Import batches: sized to hold the write lock ~BATCH_SECONDS, from FIRST_BATCH rows.
BATCH_SECONDS = 0.1
FIRST_BATCH = 1000
BATCH_ROWS = (250, 5000)
READ_AHEAD = 250  # rows read and validated in a thread per hand-over
BAR_WIDTH = 30

Progress = Callable[[int, int | None], None]


def terminal_progress(label: str) -> Progress | None:
    """A progress bar on a terminal; nothing when output is redirected (a log or a script
    reads the one-line summary)."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - started, 1e-3)
        if total:
            filled = BAR_WIDTH * min(done, total) // total
            count = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
        else:
            count = str(done)
        end = "\n" if total is not None and done >= total else ""
        line = f"\r{label} {count} rows, {rate:,.0f}/s\x1b[K"
        print(line, end=end, file=sys.stderr, flush=True)

    return show


@dataclass
class Row:
    """One CSV row read for import: its fingerprint and its clean fields, or why not."""

    number: int
    mark: str
    fields: dict[str, Any] | None
    reason: str | None = None


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


def _read(reader: csv.DictReader) -> Iterator[Row]:
    """Each row with its fingerprint, validated as the API validates a new customer."""
    seen: Counter[str] = Counter()
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        content = "\x1f".join((row.get(c) or "").strip() for c in IMPORT_COLUMNS)
        seen[content] += 1
        mark = hashlib.sha256(
            f"{content}\x1e{seen[content]}".encode("utf-8", "surrogateescape")
        ).hexdigest()
        try:
            fields = parse_body(_row_fields(row), customers.PROFILE_FIELDS, ["name"])
        except DomainError as error:
            yield Row(number, mark, None, error.detail)
        else:
            yield Row(number, mark, fields)


def _check_header(columns: list[str]) -> None:
    bad_headers = [c for c in columns if not is_text(c)]
    if bad_headers:
        raise Invalid([("header", "is not UTF-8 text; save the file as UTF-8 CSV")])
    if "name" not in columns:
        raise Invalid([("name", "the CSV needs a header row with at least a name column")])
    unknown = set(columns) - set(IMPORT_COLUMNS)
    if unknown:
        raise Invalid([(c, "unknown column") for c in sorted(unknown)])


def import_customers(path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Import customers from CSV; returns counts and the rejected rows with reasons."""
    # Bytes that are not UTF-8 become lone surrogates, which validation rejects by field and
    # row, instead of the whole import stopping at the first one.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        total = sum(1 for _ in handle) - 1
    report: dict[str, Any] = {"imported": 0, "skipped": 0, "rejected": []}
    size, batch, done = FIRST_BATCH, [], 0
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        _check_header(list(reader.fieldnames or []))
        with contextlib.closing(_read_ahead(_read(reader))) as chunks:
            for chunk in chunks:
                batch += chunk
                if len(batch) >= size:
                    size = _next_size(size, _import_batch(batch, report))
                    done, batch = done + len(batch), []
                    if progress:
                        progress(done, total)
        if batch:
            _import_batch(batch, report)
    if progress:
        progress(total, total)
    return report


def _read_ahead(rows: Iterator[Row]) -> Iterator[list[Row]]:
    """`rows` in lists, read and validated in a thread while the caller writes the lists
    before (SQLite lets go of the GIL while it inserts and indexes: ~half an import)."""
    handed: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def hand(item: list[Row] | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                return handed.put(item, timeout=0.1)

    def read() -> None:
        try:
            while not stop.is_set() and (chunk := list(itertools.islice(rows, READ_AHEAD))):
                hand(chunk)
            hand(None)
        except BaseException as error:  # the caller raises it
            hand(error)

    reader = threading.Thread(target=read, name="csv-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := handed.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _import_batch(rows: list[Row], report: dict[str, Any]) -> float:
    """Import rows not imported before in one transaction; the seconds it held the lock."""
    with database.atomic():
        started = time.perf_counter()
        held = _imported_marks(r.mark for r in rows)
        new = [r for r in rows if r.fields is not None and r.mark not in held]
        ids = customers.create_customers([r.fields for r in new])
        stamp = now_iso()
        insert_rows("import_mark", [
            {"fingerprint": r.mark, "customer_id": customer_id, "imported_at": stamp}
            for r, customer_id in zip(new, ids, strict=True)
        ])  # fmt: skip
    elapsed = time.perf_counter() - started
    report["imported"] += len(new)
    report["skipped"] += sum(1 for r in rows if r.mark in held)
    report["rejected"] += [{"row": r.number, "reason": r.reason} for r in rows
                           if r.fields is None and r.mark not in held]  # fmt: skip
    return elapsed


def _imported_marks(fingerprints: Iterable[str]) -> set[str]:
    pending, held = list(fingerprints), set()
    for start in range(0, len(pending), PAGE):
        chunk = pending[start : start + PAGE]
        held |= {r["fingerprint"] for r in fetch_all(
            f"SELECT fingerprint FROM import_mark WHERE fingerprint IN ({marks(chunk)})", chunk
        )}  # fmt: skip
    return held


def _next_size(size: int, seconds: float) -> int:
    """The next batch's row count: aimed at BATCH_SECONDS, at most doubling each time."""
    aimed = int(size * BATCH_SECONDS / max(seconds, 1e-4))
    low, high = BATCH_ROWS
    return max(low, min(high, 2 * size, aimed))


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
