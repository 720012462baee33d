"""The shop database: one SQLite file, opened with the settings the ledger needs."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import peewee
from peewee import __exception_wrapper__ as peewee_errors

from node import files
from node.clock import uuid7
from node.migrations import migrate

# The models bind to this proxy; open_database() points it at the shop's file.
database = peewee.DatabaseProxy()

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    # An acknowledged payment must survive a power cut, so fsync on every commit.
    "synchronous": "full",
    "busy_timeout": 5000,
    "cache_size": -16000,
    # Deleted and overwritten content is zeroed, so a scrubbed customer's data does not
    # linger in free pages of the file.
    "secure_delete": 1,
}

# A program that takes the write lock transaction after transaction (`shopnode import`'s
# batches, `shopnode sync`'s catch-up) leaves it free this long after a commit when another
# writer (a payment in `serve`) has waited for it meanwhile: SQLite's busy handler looks
# again every 100 ms at most, and a BEGIN IMMEDIATE a few ms after COMMIT would otherwise win
# the lock each time (a payment waited through transaction after transaction, and past
# busy_timeout got a 503). A writer says it is waiting by touching the database's lock file
# (LOCK_NOTICE_MS into its wait); with nobody waiting, the run goes on at full speed.
LOCK_HANDOVER = 0.12
LOCK_NOTICE_MS = 50


def lock_file(path: Path) -> Path:
    """The file beside the database that `serve` and the other commands hold (node.backup
    .serving) and whose modification time says when a writer last waited for the lock."""
    return path.with_name(path.name + ".lock")


class ShopDatabase(peewee.SqliteDatabase):
    """The shop's file: a transaction that waits for the write lock says so (see
    LOCK_HANDOVER)."""

    lock_file: Path | None = None
    lock_seen = 0  # the lock file's time at the last look (hand_over_lock)

    def begin(self, lock_type: str | None = None) -> None:
        if self.lock_file is None:
            return super().begin(lock_type)
        connection = self.connection()
        connection.execute(f"PRAGMA busy_timeout = {LOCK_NOTICE_MS}")
        deadline = time.monotonic() + PRAGMAS["busy_timeout"] / 1000
        try:
            while True:
                try:
                    return super().begin(lock_type)
                except peewee.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                # Said again at each look: a waiter that missed one hand-over gets the next.
                self._say_waiting()
        finally:
            connection.execute(f"PRAGMA busy_timeout = {PRAGMAS['busy_timeout']}")

    def _say_waiting(self) -> None:
        unseen = _lock_time(self.lock_file) != self.lock_seen
        with contextlib.suppress(OSError):  # cannot be written: nobody to tell
            self.lock_file.touch()  # made again if it was removed
        if not unseen:  # this program's own waiting is no reason for it to pause
            self.lock_seen = _lock_time(self.lock_file)


def _lock_time(path: Path | None) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return 0


def hand_over_lock() -> None:
    """Between two transactions of a long run of them: let a writer that has waited for the
    lock since the last look have it."""
    db = database.obj
    waited = _lock_time(db.lock_file)
    if waited != db.lock_seen:
        db.lock_seen = waited
        time.sleep(LOCK_HANDOVER)


def shop_database(path: Path) -> ShopDatabase:
    """A connection (not yet open, no models bound) to the shop's file, as every command's."""
    # IMMEDIATE: every transaction takes the write lock up front, so two writers queue on
    # busy_timeout instead of failing with "database is locked" when they upgrade.
    db = ShopDatabase(str(path), pragmas=PRAGMAS, lock_type="IMMEDIATE")
    db.lock_file = lock_file(path)
    db.lock_seen = _lock_time(db.lock_file)
    return db


def open_database(path: Path | str, migrate_schema: bool = True) -> peewee.SqliteDatabase:
    """Open (creating if needed) and upgrade the shop database, and bind the models to it."""
    path = Path(path)
    # Customer data: 0600 file in a 0700 dir; SQLite gives -wal/-shm the file's mode.
    files.private_file(path)
    for suffix in ("-wal", "-shm"):
        files.tighten(path.with_name(path.name + suffix))
    db = shop_database(path)
    db.connect()
    if migrate_schema:
        migrate(db)
    database.initialize(db)
    if migrate_schema:
        node_identity()
    return db


_checkpoint_due = False


def checkpoint() -> None:
    """After personal data was scrubbed: merge the search index (a deleted row's trigrams
    stay in old index segments until a merge; ~0.2 s on 100k customers), then copy the
    WAL into the database and truncate it (the WAL still holds the pages as they were).
    Inside a transaction (a write on node.writer's thread) it is done once that commits.
    A reader holding an old snapshot may keep some frames until the next checkpoint."""
    global _checkpoint_due
    if database.in_transaction():
        _checkpoint_due = True
        return
    _checkpoint_due = False
    database.execute_sql("INSERT INTO customer_fts(customer_fts) VALUES ('optimize')")
    database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def checkpoint_if_due() -> None:
    """The checkpoint a write asked for inside its transaction, now that it committed."""
    if _checkpoint_due:
        checkpoint()


def get_meta(key: str) -> str | None:
    row = run("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(key: str, value: str) -> None:
    run(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def node_identity() -> str:
    """This node's origin id, created on first start."""
    with database.atomic():
        origin = get_meta("origin_id")
        if origin is None:
            origin = uuid7()
            set_meta("origin_id", origin)
    return origin


# Hand-written SQL through these helpers is for the paths the benchmarks time: peewee takes
# ~150 us to build a statement that runs in ~10 us. Requests (bench/money.py), search
# (bench/search.py), catch-up (bench/sync.py) and CSV import use them; the rest uses the
# models' query builder (node/models.py).
def run(sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
    """A statement on this thread's connection, straight to sqlite3: what
    `database.execute_sql` does less its logging, hooks and proxy lookups (~3 us of ~5 a
    statement), its errors still peewee's."""
    try:
        return database.obj.connection().execute(sql, params)
    except sqlite3.Error as exc:
        with peewee_errors:  # raises the peewee error of this class, as execute_sql does
            raise exc


def fetch_all(sql: str, params: tuple | list = ()) -> list[dict]:
    """Rows of a query as dicts keyed by column name."""
    cursor = run(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def marks(values: Iterable[Any]) -> str:
    """One `?` per value: an IN list or a VALUES row."""
    return ", ".join("?" for _ in values)


def insert_row(table: str, row: dict[str, Any]) -> None:
    """INSERT one row given as {column: value}."""
    execute(_insert_sql(table, tuple(row)), tuple(row.values()))


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks(columns)})"


def insert_rows(table: str, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows with the same columns, as many per statement as SQLite takes values
    (CSV import, catch-up): the search index writes what a statement gave it at the end of
    each (a new segment to merge), so a statement per row costs its trigger ~5x more than
    the rows themselves, and 500 rows per statement ~20% more than thousands."""
    if not rows:
        return
    columns = list(rows[0])
    limit = database.connection().getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, limit // len(columns))
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        values = ", ".join([f"({marks(columns)})"] * len(part))
        execute(f"INSERT INTO {table}({', '.join(columns)}) VALUES {values}",
                [row[c] for row in part for c in columns])  # fmt: skip


class savepoint:  # noqa: N801 (used as `with savepoint():`, like database.atomic())
    """`database.atomic()` for the paths a request takes: inside a transaction, a savepoint
    of one fixed name (SQLite nests them by name, and the statements are prepared once;
    peewee names each anew); outside one, a transaction of its own."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        if database.in_transaction():
            self._outer = None
            run("SAVEPOINT w")
        else:
            self._outer = database.atomic()
            self._outer.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> bool | None:
        if self._outer is not None:
            return self._outer.__exit__(exc_type, *rest)
        if exc_type is not None:
            run("ROLLBACK TO w")
        run("RELEASE w")
        return None


def fetch_one(sql: str, params: tuple | list = ()) -> dict | None:
    cursor = run(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def fetch_value(sql: str, params: tuple | list = ()) -> Any:
    """The first column of the first row (None without a row)."""
    row = run(sql, params).fetchone()
    return None if row is None else row[0]


def execute(sql: str, params: tuple | list = ()) -> int:
    """Run a write; returns the number of rows changed."""
    return run(sql, params).rowcount
