"""One writer: every write of a serving node goes through one thread and one connection.

SQLite takes one writer at a time anyway; the first release let each request take the
write lock on the event loop, so every commit's fsync stalled every other request. Here
the event loop only queues a write and awaits its answer. The writer thread takes every
write that is waiting (a group), runs each in its own savepoint inside one transaction,
commits once (one fsync under synchronous=FULL) and only then answers each caller, so a
2xx still means the write is on disk. A write that raises rolls back its own savepoint and
its caller gets the exception; the rest of the group commits. A failed commit fails the
whole group: nothing of it is on disk, and every caller hears so.

Reads use their own connections (peewee keeps one per thread; WAL lets readers run beside
the writer). A point read takes microseconds and stays on the event loop (a thread hop
costs more than it does); anything that can take milliseconds (a search over many matches,
a ledger page, a report, the change log a sync push sends) goes to `read`, which runs it
on a small pool of reader threads. `serve` makes the loop's own connection read-only
(`PRAGMA query_only`), so a write that does not come through here fails loudly instead of
waiting on the lock in the event loop.

Without a running writer (the CLI, tests of plain functions), `write` runs the function in
its own transaction on the spot and `read` runs it right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from node.db import checkpoint_if_due, database, savepoint
from node.errors import NotSaved

log = logging.getLogger("shopnode.writer")

T = TypeVar("T")

# Reads that can take milliseconds run on this many threads: SQLite runs them outside
# Python's lock, so two cores serve a search and the event loop at once.
READERS = 2
# A group is everything waiting when the writer is free, up to this many writes: at about
# 0.3 ms of work each, the last caller of a full group waits ~30 ms for its answer.
MAX_GROUP = 100


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = None


@dataclass
class GroupStats:
    """What the writer has done, for /metrics and benchmarks."""

    groups: int = 0
    writes: int = 0
    failed_commits: int = 0
    largest_group: int = 0
    observers: list[Callable[[int], None]] = field(default_factory=list)


class Writer:
    """The thread that owns the write connection and commits writes in groups, and the
    reader threads beside it."""

    def __init__(self, max_group: int = MAX_GROUP, readers: int = READERS) -> None:
        self.max_group = max_group
        self.stats = GroupStats()
        self.readers = ThreadPoolExecutor(
            readers, thread_name_prefix="shopnode-reader", initializer=_small_cache
        )
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="shopnode-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every write already queued, then close the writer's connection."""
        self._queue.put(None)
        self._thread.join()
        self.readers.shutdown(wait=True)

    async def read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.readers, fn)

    async def write(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer; returns its result once it is committed to disk."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group, stopping = [first], False
                while len(group) < self.max_group:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    group.append(job)
                self._commit(group)
                if stopping:
                    return
        finally:
            database.close()

    def _commit(self, group: list[_Job]) -> None:
        try:
            with database.atomic():
                for job in group:
                    try:
                        with savepoint():
                            job.result = job.fn()
                    except Exception as exc:  # the caller's error: only its savepoint goes
                        job.error = exc
        except Exception as exc:
            # The transaction failed as a whole (disk full, I/O error, the lock held by
            # another program past busy_timeout): nothing of the group stays.
            log.error("a group of %d writes could not be committed: %s", len(group), exc)
            self.stats.failed_commits += 1
            not_saved = NotSaved(
                f"the write could not be saved ({exc}); nothing was recorded: send it again"
            )
            for job in group:
                job.error = job.error or not_saved
        else:
            self.stats.groups += 1
            self.stats.writes += len(group)
            self.stats.largest_group = max(self.stats.largest_group, len(group))
            for observe in self.stats.observers:
                observe(len(group))
            try:
                checkpoint_if_due()
            except Exception as exc:  # the writes are committed; the next scrub tries again
                log.warning("checkpoint after a scrub failed: %s", exc)
        # One wake-up of each waiting loop for the whole group (each call_soon_threadsafe
        # writes to the loop's self-pipe).
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle_all, jobs)


# A reader's own page cache: what it reads again is in the OS's cache anyway, and each
# connection's cache stays in the node's memory for good (16 MB each at the default).
READER_CACHE_KIB = 2000


def _small_cache() -> None:
    database.execute_sql(f"PRAGMA cache_size = -{READER_CACHE_KIB}")


def _settle_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _settle(job)


def _settle(job: _Job) -> None:
    if job.future.done():  # the caller went away (its request was cancelled)
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


_current: Writer | None = None


def install(writer: Writer | None) -> None:
    """Make `writer` the one `write` uses in this process (None: write on the spot)."""
    global _current
    _current = writer


async def write(fn: Callable[[], T]) -> T:
    """Run a write: on the writer when one runs, else in its own transaction right here."""
    if _current is not None:
        return await _current.write(fn)
    with database.atomic():
        result = fn()
    checkpoint_if_due()
    return result


async def read(fn: Callable[[], T]) -> T:
    """Run a read that can take milliseconds off the event loop, on a reader thread."""
    if _current is not None:
        return await _current.read(fn)
    return fn()


def installed() -> bool:
    """Whether writes go through a writer thread (inside `serve`)."""
    return _current is not None


def read_only_here() -> None:
    """Refuse writes on this thread's connection (the serving loop's: writes go through
    the writer, so one that does not is a bug, not a wait on the lock)."""
    database.execute_sql("PRAGMA query_only = 1")
