"""Backups of the shop database: consistent, checked copies, taken on demand or on a schedule.

A backup is a copy made with SQLite's online backup API while the node serves, written under
a temporary name, checked with `PRAGMA integrity_check` and only then renamed into place, 0600:
a file named like a backup is always a whole, sound database. Scheduled backups (`[backup]`)
run inside `serve` as `shop-YYYYMMDDTHHMMSSZ.db` (UTC) in the backup dir, the oldest pruned
beyond `keep`; `last_backup()` is what the status, `shopnode doctor` and the metrics report.
`shopnode restore` installs one (node/restore.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import files
from node.clock import iso, now, now_iso
from node.config import Config
from node.db import lock_file

if TYPE_CHECKING:  # only `serve` needs aiohttp; the backup commands start without it
    from aiohttp import web

log = logging.getLogger("shopnode.backup")

NAME = re.compile(r"shop-(\d{8}T\d{6}Z)\.db")
STAMP = "%Y%m%dT%H%M%SZ"
# A node (re)started with a backup due waits this long first (or one interval, if shorter),
# so a start and a quick restart are not slowed by a copy.
START_DELAY = timedelta(seconds=60)


class BackupFailed(OSError):
    """The copy could not be made or is not sound; no backup file was left behind."""


class NodeRunning(Exception):
    """`serve` or another command holds the database (see serving())."""


COMPANIONS = ("-wal", "-shm", "-journal")  # files SQLite keeps beside a database


def is_part_of(database: Path, target: Path) -> bool:
    """Whether `target` is `database` itself or one of the files beside it (its journal,
    shared memory or lock), under whatever name or link."""
    parts = [database, *(Path(f"{database}{s}") for s in COMPANIONS), lock_file(database)]
    if target.resolve() in {part.resolve() for part in parts}:
        return True
    return target.exists() and any(part.exists() and os.path.samefile(part, target)
                                   for part in parts)  # fmt: skip


@dataclass(frozen=True)
class BackupFile:
    path: Path
    taken_at: datetime  # UTC, from its name
    size_bytes: int

    def describe(self) -> dict[str, Any]:
        """For the status: the file's name only (the dir is the operator's, in the config;
        a status may be shown in a chat, where the machine's paths have no business)."""
        return {"last_at": iso(self.taken_at), "size_bytes": self.size_bytes,
                "file": self.path.name}  # fmt: skip


def backup_name(moment: datetime) -> str:
    return f"shop-{moment.astimezone(UTC).strftime(STAMP)}.db"


def backups(directory: Path) -> list[BackupFile]:
    """The backups in `directory`, oldest first (other files there are not ours)."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            match = NAME.fullmatch(entry.name)
            if match and entry.is_file():
                taken = datetime.strptime(match[1], STAMP).replace(tzinfo=UTC)
                found.append(BackupFile(Path(entry.path), taken, entry.stat().st_size))
    return sorted(found, key=lambda backup: backup.path.name)


def last_backup(directory: Path) -> BackupFile | None:
    """The newest backup in `directory` (its time, size and file), or None."""
    found = backups(directory)
    return found[-1] if found else None


def database_size(database: Path) -> int:
    """Bytes the database takes: its file and its write-ahead log."""
    return sum(
        Path(f"{database}{suffix}").stat().st_size
        for suffix in ("", "-wal")
        if Path(f"{database}{suffix}").exists()
    )


def write_backup(database: Path, target: Path) -> int:
    """Copy the live `database` to `target`, checked, 0600; its size in bytes.

    One backup step copies the whole file inside one read transaction: in WAL mode writers
    go on meanwhile, and a copy made in several steps would start over whenever another
    connection writes between two of them. Python releases the GIL while SQLite copies.
    """
    if not database.exists():
        raise BackupFailed(f"no shop database at {database}")
    if is_part_of(database, target):
        raise BackupFailed(f"{target} is the shop's database (or a file SQLite keeps beside "
                           "it): back up to another file, better on another disk")  # fmt: skip
    partial = target.with_name(f".{target.name}.partial")
    files.private_file(partial)  # 0600 before the first byte of customer data lands
    try:
        with (
            contextlib.closing(sqlite3.connect(database, timeout=30)) as source,
            contextlib.closing(sqlite3.connect(partial)) as copy,
        ):
            with copy:
                source.backup(copy)
            # One self-contained file (the source's WAL mode would be copied with its pages).
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = integrity_problems(copy)
        if problems:
            raise BackupFailed(f"the copy fails its integrity check: {problems}")
        os.replace(partial, target)
        files.sync_dir(target.parent)
    except (OSError, sqlite3.Error) as exc:
        raise BackupFailed(f"backup to {target} failed: {exc}") from exc
    finally:
        _remove_partial(partial)
    return target.stat().st_size


def integrity_problems(connection: sqlite3.Connection) -> str:
    """What `PRAGMA integrity_check` finds wrong, on one line (the first few); "" if sound."""
    try:
        found = [row[0] for row in connection.execute("PRAGMA integrity_check(3)")]
    except sqlite3.DatabaseError as exc:  # too damaged to walk
        found = [str(exc)]
    return "" if found == ["ok"] else "; ".join(" ".join(line.split()) for line in found)


def _remove_partial(partial: Path) -> None:
    for suffix in ("", "-journal"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)


def take_backup(database: Path, directory: Path, keep: int) -> BackupFile:
    """One scheduled backup into `directory`, then the oldest beyond `keep` removed."""
    files.private_dir(directory)
    moment = now().replace(microsecond=0)
    target = directory / backup_name(moment)
    size = write_backup(database, target)
    prune(directory, keep)
    return BackupFile(target, moment, size)


def prune(directory: Path, keep: int) -> list[Path]:
    """Remove the oldest backups beyond `keep`; what was removed."""
    removed = [backup.path for backup in backups(directory)[:-keep]]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class BackupSchedule:
    """Scheduled backups of one serving node, and how the latest attempt went."""

    def __init__(self, database: Path, directory: Path, every_hours: float, keep: int) -> None:
        self.database = database
        self.directory = directory
        self.interval = timedelta(hours=every_hours)
        self.keep = keep
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.scheduler: Any = None  # the AsyncIOScheduler running it (install())

    @classmethod
    def from_config(cls, config: Config) -> BackupSchedule:
        return cls(config.database_path, config.backup_dir, config.backup.every_hours,
                   config.backup.keep)  # fmt: skip

    def first_due(self, moment: datetime) -> datetime:
        """One interval after the last backup, but not sooner than a short while after start."""
        last = last_backup(self.directory)
        # A backup stamped in the future (the clock was wrong then) does not put this off.
        due = last.taken_at + self.interval if last and last.taken_at <= moment else moment
        return max(due, moment + min(self.interval, START_DELAY))

    async def run(self) -> None:
        """The job: one backup, copied in a thread so the API keeps answering; a failure
        (disk full, dir not writable) is logged and reported, and the node serves on."""
        try:
            made = await asyncio.to_thread(take_backup, self.database, self.directory, self.keep)
        except Exception as exc:
            self.last_error, self.last_error_at = reason(exc), now_iso()
            log.error("scheduled backup failed; the node serves on: %s", exc)
        else:
            self.last_error = self.last_error_at = None
            log.info("backup %s (%d bytes) written and checked", made.path.name, made.size_bytes)

    def next_at(self) -> datetime | None:
        job = self.scheduler.get_job("backup") if self.scheduler else None
        return job.next_run_time if job else None


def reason(exc: BaseException) -> str:
    """Why a backup failed, without the machine's paths (the log has them; the status may be
    shown in a chat): 'No space left on device', 'database or disk is full'."""
    cause = exc.__cause__ or exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause)


def report(directory: Path, schedule: BackupSchedule | None) -> dict[str, Any]:
    """The status's `backup`: the last backup in `directory` (nulls when there is none)
    and, when `serve` schedules backups, how often, the next one and the latest failure."""
    last = last_backup(directory)
    body = last.describe() if last else {"last_at": None, "size_bytes": None, "file": None}
    next_at = schedule.next_at() if schedule else None
    body.update(
        every_hours=schedule.interval / timedelta(hours=1) if schedule else 0.0,
        next_at=iso(next_at) if next_at else None,
        last_error=schedule.last_error if schedule else None,
        last_error_at=schedule.last_error_at if schedule else None,
    )
    return body


def install(app: web.Application, schedule: BackupSchedule) -> None:
    """Run `schedule` inside a node app (`serve`), next to the sync worker's scheduler."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from node.api.keys import BACKUPS

    app[BACKUPS] = schedule

    async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
        # Leftovers of a copy cut short (the process was killed) are never backups.
        for partial in schedule.directory.glob(".shop-*.db.partial*"):
            partial.unlink(missing_ok=True)
        scheduler = AsyncIOScheduler()
        # A late run still runs (a laptop that slept); missed runs collapse into one.
        scheduler.add_job(
            schedule.run, "interval", seconds=schedule.interval.total_seconds(),
            start_date=schedule.first_due(now()), max_instances=1, coalesce=True,
            misfire_grace_time=None, id="backup",
        )  # fmt: skip
        scheduler.start()
        schedule.scheduler = scheduler
        yield
        scheduler.shutdown(wait=False)
        schedule.scheduler = None

    app.cleanup_ctx.append(scheduler_context)


@contextlib.contextmanager
def serving(database: Path, exclusive: bool = False) -> Iterator[None]:
    """Held while `serve` or another command that opens `database` runs (shared: several
    may; node.cli), so that `shopnode restore` (exclusive) can tell and refuse, and none
    starts while a restore swaps the files. The lock goes with the process, however it
    ends."""
    path = lock_file(database)
    files.private_dir(path.parent)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise NodeRunning(f"shopnode is running on {database} (serve, or a command "
                                  "such as import or sync)") from None  # fmt: skip
            raise NodeRunning(f"a restore is being installed at {database}; run this once "
                              "it is done") from None  # fmt: skip
        yield
