"""CSV import and export of customers and the ledger (`shopnode import/export`).

Import validates each row with the API's own rules and reports rejected rows by number.
Each imported row leaves a fingerprint (its content plus how many identical rows came
before it in the file), so running the same import again imports nothing twice.

Rows go in batches, each one transaction holding the customers, their change-log entries
and their fingerprints, so an import stopped at any point leaves whole batches and a re-run
completes it. A batch is sized to hold the write lock for about BATCH_SECONDS, and the lock
is left free a moment after each (db.hand_over_lock): a node serving the same database
meanwhile waits that long at most for its own writes. Each commit
rewrites the pages of the indexes a batch touches all over (names, fingerprints, the search
index) in the WAL, so small batches cost several times more per row (bench/run.py: 300-row
batches ~2x the SQLite time of 5,000-row ones).

A thread reads, validates and makes each row's customer and change (ids, fact rows, change
bodies) while the caller's thread writes the batch before, with SQLite not holding the GIL:
inside the transaction is little more than the INSERTs.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import queue
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import changes, customers, files
from node.clock import now_iso, uuid7s
from node.db import database, fetch_all, hand_over_lock, insert_rows, marks
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
# Import batches: sized to hold the write lock ~BATCH_SECONDS (commit included), from
# FIRST_BATCH rows.
BATCH_SECONDS = 0.5
FIRST_BATCH = 2000
BATCH_ROWS = (250, 20_000)
READ_AHEAD = 250  # rows read and validated in a thread per hand-over
# A credit_limit cell read as a number: ASCII digits ("²".isdigit() is true too), few enough
# for an amount; other text is validated as it is, and refused as not an integer.
INTEGER_CELL = re.compile(r"-?[0-9]{1,18}")
# csv's own limit on a cell (128 KiB) would stop the import with a traceback; a cell of any
# size is read instead, and a row with one too long for its field is rejected by validation.
CSV_CELL_LIMIT = min(sys.maxsize, 2**31 - 1)
BAR_WIDTH = 30
IMPORT_PRAGMAS = {"wal_autocheckpoint": 16_000}  # pages: 64 MB

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


@dataclass(slots=True)
class Row:
    """One CSV row read for import: its fingerprint and its new customer, or why not."""

    number: int
    mark: str
    new: changes.NewFact | None
    reason: str | None = None


def _row_fields(cells: list[str]) -> dict[str, Any]:
    """CSV text (trimmed cells of IMPORT_COLUMNS) to API field values: empty cells are
    absent, tags split on ';'."""
    fields: dict[str, Any] = {}
    for column, cell in zip(IMPORT_COLUMNS, cells, strict=True):
        if not cell:
            continue
        value = unsafe_cell(cell)
        if column == "tags":
            fields[column] = [t for t in (p.strip() for p in value.split(";")) if t]
        elif column == "credit_limit":
            fields[column] = int(value) if INTEGER_CELL.fullmatch(value) else value
        else:
            fields[column] = value
    return fields


def _read(reader: Iterator[list[str]], header: list[str]) -> Iterator[list[Row]]:
    """The rows after the header, READ_AHEAD at a time, each with its fingerprint and
    validated as the API validates a new customer; a valid row's customer made as the API
    makes one (id, created_at), ready to store."""
    # As csv.DictReader reads a row: the last column of a name wins, a short row's missing
    # cells (and a column not in the header) are empty, blank lines are not rows.
    where = {column: i for i, column in enumerate(header)}
    at = [where.get(column, sys.maxsize) for column in IMPORT_COLUMNS]
    seen: Counter[str] = Counter()
    numbered = enumerate((row for row in reader if row), start=2)  # row 1 is the header
    while chunk := list(itertools.islice(numbered, READ_AHEAD)):
        read, made = [], []
        for number, row in chunk:
            width = len(row)
            cells = [row[i].strip() if i < width else "" for i in at]
            content = "\x1f".join(cells)
            seen[content] += 1
            mark = hashlib.sha256(
                f"{content}\x1e{seen[content]}".encode("utf-8", "surrogateescape")
            ).hexdigest()
            try:
                fields = parse_body(_row_fields(cells), customers.PROFILE_FIELDS, ["name"])
            except DomainError as error:
                read.append((number, mark, error.detail))
            else:
                made.append(fields)
                read.append((number, mark, None))
        created_at, ids = now_iso(), uuid7s(len(made))
        new = iter(changes.new_facts("customer.created", "customer", [
            customers.new_customer(customer_id, fields, created_at)
            for customer_id, fields in zip(ids, made, strict=True)
        ]))  # fmt: skip
        yield [_checked_row(number, mark, next(new)) if reason is None
               else Row(number, mark, None, reason)
               for number, mark, reason in read]  # fmt: skip


def _checked_row(number: int, mark: str, new: changes.NewFact) -> Row:
    """A valid row's customer, unless its change is one central would refuse."""
    if new.refused is not None:
        return Row(number, mark, None, new.refused.detail)
    return Row(number, mark, new, None)


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
    csv.field_size_limit(CSV_CELL_LIMIT)
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        _check_header(header)
        with _import_pragmas(), contextlib.closing(_read_ahead(_read(reader, header))) as chunks:
            for chunk in chunks:
                batch += chunk
                if len(batch) >= size:
                    size = _next_size(size, _import_batch(batch, report))
                    hand_over_lock()  # to a waiting serve; the next rows are read meanwhile
                    done, batch = done + len(batch), []
                    if progress:
                        progress(done, total)
            if batch:
                _import_batch(batch, report)
    if progress:
        progress(total, total)
    return report


@contextlib.contextmanager
def _import_pragmas() -> Iterator[None]:
    """This connection's settings for an import: a checkpoint every 64 MB of WAL rather
    than every 4 MB (a batch rewrites the index pages it touched all over, and each
    checkpoint copies them into the database again: ~10% of an import's SQLite time)."""
    saved = {name: database.execute_sql(f"PRAGMA {name}").fetchone()[0]
             for name in IMPORT_PRAGMAS}  # fmt: skip
    for name, value in IMPORT_PRAGMAS.items():
        database.execute_sql(f"PRAGMA {name} = {value}")
    try:
        yield
    finally:
        for name, value in saved.items():
            database.execute_sql(f"PRAGMA {name} = {value}")


def _read_ahead(chunks: Iterator[list[Row]]) -> Iterator[list[Row]]:
    """`chunks` read and validated in a thread while the caller writes the ones before
    (SQLite lets go of the GIL while it inserts and indexes), up to the largest batch
    ahead."""
    handed: queue.Queue[list[Row] | BaseException | None] = queue.Queue(
        maxsize=BATCH_ROWS[1] // READ_AHEAD
    )
    stop = threading.Event()

    def hand(item: list[Row] | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                return handed.put(item, timeout=0.1)

    def read() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
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
    """Import rows not imported before in one transaction; the seconds it held the lock
    (about: BEGIN IMMEDIATE may have waited for it).
    Each customer is logged as create_customer logs one (node/customers.py)."""
    started = time.perf_counter()
    with database.atomic():
        held = _imported_marks(r.mark for r in rows)
        new = [r.new for r in rows if r.new is not None and r.mark not in held]
        changes.record_each("customer.created", "customer", new)
        stamp = now_iso()
        insert_rows("import_mark", [
            {"fingerprint": r.mark, "customer_id": r.new.fact["id"], "imported_at": stamp}
            for r in rows if r.new is not None and r.mark not in held
        ])  # fmt: skip
    elapsed = time.perf_counter() - started
    report["imported"] += len(new)
    report["skipped"] += sum(1 for r in rows if r.mark in held)
    report["rejected"] += [{"row": r.number, "reason": r.reason} for r in rows
                           if r.new is None and r.mark not in held]  # fmt: skip
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
