"""`shopnode restore FILE`: install a backup in place of the shop database, node stopped.

The backup is copied next to the database first and everything is checked on that copy
(integrity, that it is a shop's database, its schema version; an older one is upgraded
there), so a refusal leaves the current database exactly as it was. Only then is the
current database moved aside (never deleted, its -wal and -shm with it) and the copy renamed
into its place.

A restored node must not number new changes as it did after the backup: central may already
hold those numbers, for the changes made after the backup. So the copy takes a new origin
id before it is installed (`start_over`, which the CLI gives: sync/worker.py), and the next
sync round brings back from central what was recorded after the backup.

What was taken back after the backup stays taken back (`_carry_withdrawals`): an API token
revoked since (a lost phone's) must not work again, nor a customer's Telegram /stop or
"receipts off" be undone, nor a receipt already sent be sent again when sync brings its
fact back. They are read from the database being replaced, when it can be read.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from node import db, events, files
from node.backup import COMPANIONS, NodeRunning, integrity_problems, serving
from node.migrations import SCHEMA_VERSION
from node.models import TelegramMessage


class RestoreRefused(Exception):
    """The backup was not installed and nothing was changed; the message says why."""


def restore(database: Path, backup: Path, start_over: Callable[[], str]) -> str:
    """Install `backup` as `database`; what was done, a line each."""
    if not backup.is_file():
        raise RestoreRefused(f"no backup file at {backup}")
    wal = Path(f"{backup}-wal")
    if wal.exists() and wal.stat().st_size:
        raise RestoreRefused(f"{wal} holds changes that are not in {backup}: take backups with "
                             "`shopnode backup FILE`, which makes one whole file")  # fmt: skip
    try:
        with serving(database, exclusive=True):
            return _install(database, backup, start_over)
    except NodeRunning as exc:
        raise RestoreRefused(f"{exc}; stop it first") from None


def _install(database: Path, backup: Path, start_over: Callable[[], str]) -> str:
    staged = database.with_name(f".{database.name}.restoring")
    _remove(staged)  # a restore cut short left it
    try:
        files.private_file(staged)
        shutil.copyfile(backup, staged)
        version = check_backup(staged, backup)
        with _opened(database) as current:  # the database being replaced, read once here
            _check_lineage(current, database, staged, backup)
            feed_head = _feed_head(current)
            withdrawn = _withdrawn(current)
        db.open_database(staged)  # upgrades an older schema, here on the copy
        try:
            _carry_feed_on(feed_head)
            kept = _carry_withdrawals(withdrawn)
            held = db.fetch_one("SELECT (SELECT COUNT(*) FROM customer) AS customers, "
                                "(SELECT MAX(recorded_at) FROM change_log) AS newest")
            origin = start_over()
        finally:
            db.database.close()
        if any(Path(f"{staged}{suffix}").exists() for suffix in COMPANIONS):
            raise OSError(f"{staged} kept a journal after it was closed; nothing was changed")
        with open(staged, "rb+") as installed:
            os.fsync(installed.fileno())  # its bytes on disk before its name is the database's
        aside = _move_aside(database)
        os.replace(staged, database)
        files.sync_dir(database.parent)
    finally:
        _remove(staged)
    upgraded = f" (upgraded from schema version {version})" if version < SCHEMA_VERSION else ""
    lines = [f"restored {backup}{upgraded}: it holds {held['customers']} customers, its "
             f"newest change recorded at {held['newest'] or 'none'}; check it is this shop's"]
    if aside:
        lines.append(f"the previous database is kept as {aside}")
    lines += [f"the node now writes as origin {origin}; if it syncs, its next round gets back "
              "from central what was recorded after this backup",
              "API tokens and settings are as they were when the backup was taken, but for "
              "revocations (check `shopnode token list`)", kept]  # fmt: skip
    return "\n".join(lines)


@dataclass
class Withdrawn:
    """What the database being replaced had taken back or done, that a backup may predate."""

    revoked: list[tuple[str, str]]  # (token_hash, revoked_at)
    links: dict[tuple[str, int], int]  # (customer_id, telegram_user_id) -> receipts on
    messages: list[tuple]  # telegram_message rows: receipts and reminders sent


@contextlib.contextmanager
def _opened(database: Path) -> Iterator[sqlite3.Connection | None]:
    """The database being replaced, read-only; None if there is none. A damaged one opens
    and fails at its first query: each reader below says what it does then."""
    if not database.exists():
        yield None
        return
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as old:
        yield old


def _withdrawn(old: sqlite3.Connection | None) -> Withdrawn | None:
    """Read from the database being replaced; None if it cannot be read (a restore is often
    for a damaged one)."""
    if old is None:
        return Withdrawn([], {}, [])
    try:
        revoked = old.execute("SELECT token_hash, revoked_at FROM api_token "
                              "WHERE revoked_at IS NOT NULL").fetchall()  # fmt: skip
        tables = {row[0] for row in old.execute("SELECT name FROM sqlite_master")}
        if "telegram_link" not in tables:  # written before customers were on Telegram
            return Withdrawn(revoked, {}, [])
        links = {(c, u): r for c, u, r in old.execute(
            "SELECT customer_id, telegram_user_id, receipts FROM telegram_link")}  # fmt: skip
        messages = old.execute(f"SELECT {MESSAGE_COLUMNS} FROM telegram_message").fetchall()
    except sqlite3.Error:
        return None
    return Withdrawn(revoked, links, messages)


MESSAGE_COLUMNS = ", ".join(f.column_name for f in TelegramMessage._meta.sorted_fields)


def _carry_withdrawals(withdrawn: Withdrawn | None) -> str:
    """Apply `withdrawn` to the restored copy (open as node.db); what was kept, as a line."""
    if withdrawn is None:
        return ("the database being replaced could not be read: API tokens revoked and "
                "Telegram links stopped since the backup work again; revoke and unlink them "
                "again (`shopnode token list`, the bot's /customers)")  # fmt: skip
    with db.database.atomic():
        tokens = sum(db.execute("UPDATE api_token SET revoked_at = ? WHERE token_hash = ? "
                                "AND revoked_at IS NULL", (at, token_hash))
                     for token_hash, at in withdrawn.revoked)  # fmt: skip
        links = 0
        for link in db.fetch_all("SELECT customer_id, telegram_user_id, receipts "
                                 "FROM telegram_link"):  # fmt: skip
            key = (link["customer_id"], link["telegram_user_id"])
            if key not in withdrawn.links:  # unlinked (/stop) or relinked since the backup
                links += db.execute("DELETE FROM telegram_link WHERE customer_id = ?", key[:1])
            elif link["receipts"] and not withdrawn.links[key]:  # receipts turned off since
                links += db.execute("UPDATE telegram_link SET receipts = 0 "
                                    "WHERE customer_id = ?", key[:1])  # fmt: skip
        for row in withdrawn.messages:
            db.execute(f"INSERT OR IGNORE INTO telegram_message({MESSAGE_COLUMNS}) "
                       f"VALUES ({db.marks(row)})", row)  # fmt: skip
    return (f"kept from the database being replaced: {tokens} API token revocation(s) and "
            f"{links} Telegram unlink(s) or receipts turned off made after the backup, and "
            f"its record of {len(withdrawn.messages)} Telegram message(s) sent, so none is "
            "sent twice; customers who linked Telegram after the backup link again")


def _check_lineage(old: sqlite3.Connection | None, database: Path, staged: Path,
                   backup: Path) -> None:  # fmt: skip
    """Refuse a backup of another shop over a database that holds this shop's own changes:
    the two must share an origin id this shop has written under (its ids change at each
    restore, and each database keeps its earlier ones). A database that cannot be read, or
    holds nothing of its own (a node started once on a new machine), and a backup that never
    wrote (no origin id), are not checked."""
    if old is None:
        return
    try:
        ours = _own_origins(old)
        own = old.execute(f"SELECT COUNT(*) FROM change_log WHERE origin IN ({db.marks(ours)})",
                          ours).fetchone()[0]  # fmt: skip
    except (sqlite3.Error, ValueError):
        return
    with contextlib.closing(sqlite3.connect(staged)) as copy:
        theirs = _own_origins(copy)
    if own and theirs and not set(ours) & set(theirs):
        raise RestoreRefused(
            f"{backup} is a backup of another shop (it wrote as origin {theirs[0]}; this "
            f"shop writes as {ours[0]} and holds "
            f"{own} changes of its own): restoring it would replace this shop's books. If "
            f"that is meant (this machine now runs that shop), move {database} away first"
        )


def _own_origins(connection: sqlite3.Connection) -> list[str]:
    """The origin ids a shop database has written under: its own now, then its earlier ones."""
    meta = dict(connection.execute("SELECT key, value FROM meta WHERE key IN "
                                   "('origin_id', 'previous_origin_ids')").fetchall())  # fmt: skip
    ids = [meta.get("origin_id"), *json.loads(meta.get("previous_origin_ids") or "[]")]
    return [origin for origin in ids if origin]


def _feed_head(old: sqlite3.Connection | None) -> int:
    """How far the events feed of the database being replaced had got (0 if unreadable)."""
    if old is None:
        return 0
    try:
        rows = old.execute("SELECT COALESCE(MAX(rowid), 0) FROM change_log").fetchone()[0]
        shift = old.execute("SELECT value FROM meta WHERE key = ?", (events.BASE,)).fetchone()
    except sqlite3.Error:
        return 0
    return rows + int(shift[0] if shift else 0)


def _carry_feed_on(feed_head: int) -> None:
    """Changes recorded after the restore get cursors past `feed_head` (node.events), so a
    reader of the feed that had got there misses none of them."""
    if feed_head > events.head():
        db.set_meta(events.BASE, str(feed_head - (events.head() - events.base())))


def check_backup(copy: Path, backup: Path) -> int:
    """The schema version of a sound backup of a shop database; RestoreRefused otherwise."""
    with open(copy, "rb") as file:
        if file.read(16) != b"SQLite format 3\x00":
            raise RestoreRefused(f"{backup} is not a SQLite database")
    connection = sqlite3.connect(copy)
    try:
        problems = integrity_problems(connection)
        if problems:
            raise RestoreRefused(f"{backup} fails its integrity check: {problems}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    if version > SCHEMA_VERSION:
        raise RestoreRefused(
            f"{backup} was written by a newer shopnode (schema version {version}; this one "
            f"knows up to {SCHEMA_VERSION}): upgrade shopnode, then restore"
        )
    if version < 1 or not {"meta", "customer"} <= tables:
        raise RestoreRefused(f"{backup} is not a backup of a shop database")
    return version


def _move_aside(database: Path) -> Path | None:
    """Rename the database, then its -wal, -shm or -journal, to `NAME.before-restore-STAMP`
    (a companion left alone by a restore cut short goes too: it must never meet the new
    database)."""
    present = [suffix for suffix in ("", *COMPANIONS) if Path(f"{database}{suffix}").exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = database.with_name(f"{database.name}.before-restore-{stamp}")
    for n in itertools.count(2):  # never over an earlier one
        if not any(Path(f"{aside}{suffix}").exists() for suffix in ("", *COMPANIONS)):
            break
        aside = database.with_name(f"{database.name}.before-restore-{stamp}-{n}")
    for suffix in present:
        os.replace(Path(f"{database}{suffix}"), Path(f"{aside}{suffix}"))
    files.sync_dir(database.parent)
    return aside


def _remove(staged: Path) -> None:
    for suffix in ("", *COMPANIONS):
        Path(f"{staged}{suffix}").unlink(missing_ok=True)
