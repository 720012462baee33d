"""The sync worker: push this node's changes, then pull and apply everyone else's.

Push sends changes after the acknowledged sequence, in bounded batches; central answers
with the highest contiguous sequence it holds, which becomes the new acknowledgement (lower
than ours means central lost data in a restore: we re-send). Pull applies each page in the
transaction that moves the cursor past it (`shopnode sync` puts several pages in one), so
a crash mid-pull re-applies nothing and skips nothing.
If central holds more of our origin than we do, this node was restored from an old backup:
it takes a new origin identity so it never reuses a sequence number, and the pull brings
its lost changes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from node import changes, writer
from node.api.keys import HEALTH
from node.clock import now_iso, uuid7
from node.db import (
    checkpoint_if_due,
    database,
    fetch_all,
    fetch_one,
    get_meta,
    hand_over_lock,
    set_meta,
)
from node.metrics import observe_sync_round
from node.writer import read, write
from sync import merge
from sync.progress import ACKED, CURSOR, CURSOR_ID, PULL_EPOCH, PUSH_EPOCH, queue_status
from sync.protocol import (
    MAX_BATCH_CHANGES,
    MAX_PULL_LIMIT,
    PULL_PATH,
    PUSH_PATH,
    ProtocolError,
    batches,
    checked_change,
    gzip_json,
)

log = logging.getLogger("shopnode.sync")
T = TypeVar("T")

# Pages as large as central serves: fewer, larger transactions (bench/sync.py catch-up: 8%
# less CPU than pages of 500).
PULL_PAGE = MAX_PULL_LIMIT
# Inside `serve`, a page is applied this many changes at a time (~10 ms each; see
# apply_in_slices).
APPLY_SLICE = 100
# `shopnode sync` has no API waiting on the write lock: pages go several to a transaction
# (CatchUp), since each commit rewrites every index page the page's rows landed on, and a
# page's rows land all over the customer-keyed indexes (bench/sync.py catch-up of 200k
# changes, in process: 6 GB written with a commit per page, 1.6 GB with one per 10 pages).
# A transaction still ends within COMMIT_SECONDS, so a `serve` beside it waits no longer
# for the lock (its busy_timeout is 5 s).
COMMIT_CHANGES = 10_000
COMMIT_SECONDS = 2.0
# The page cache of the connection a catch-up writes on: the default 16 MB holds less than
# those index pages once the shop holds ~100k facts, and each page read again from the OS
# costs CPU (catch-up of 200k changes in process: 12% less CPU at 64 MB than at 16 MB;
# at 32 MB `shopnode sync` peaks at 113 MB RSS).
CATCH_UP_CACHE_KIB = 32_000
LOCK_WAIT = 120.0  # seconds a round waits for another round on this node to finish


class CentralUnreachable(Exception):
    """Central could not be reached or answered with an error."""


class CentralRefused(CentralUnreachable):
    """Central answered, but refused (4xx) or quarantined what we sent."""


@dataclass
class RoundResult:
    pushed: int = 0
    pulled: int = 0
    applied: int = 0
    conflicts: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"sync ok: pushed {self.pushed}, pulled {self.pulled} "
                f"({self.applied} new), conflicts {self.conflicts}")  # fmt: skip
        return text + "".join(f"; {note}" for note in self.notes)


@dataclass
class SyncState:
    """What the status endpoint and /healthz report."""

    last_success_at: str | None = None
    last_attempt_at: str | None = None
    last_error: str | None = None
    central_high: int | None = None
    running: bool = False


class Transport(Protocol):
    """How a round reaches central: HTTP in production, a faulty fake in the simulation."""

    async def push(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    async def pull(
        self, after: int, limit: int, origin: str, after_id: str, epoch: str
    ) -> dict[str, Any]: ...


class HttpTransport:
    """The /sync/v1 wire protocol over one aiohttp session, gzip both ways."""

    def __init__(self, http: aiohttp.ClientSession, central_url: str) -> None:
        self.http = http
        self.central_url = central_url

    async def push(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        url = self.central_url + PUSH_PATH
        async with self.http.post(url, data=gzip_json(payload), headers=headers) as response:
            return await _answer(response, "push")

    async def pull(
        self, after: int, limit: int, origin: str, after_id: str, epoch: str
    ) -> dict[str, Any]:
        params = {"after": str(after), "limit": str(limit), "origin": origin,
                  "after_id": after_id, "epoch": epoch}  # fmt: skip
        async with self.http.get(self.central_url + PULL_PATH, params=params) as response:
            return await _answer(response, "pull")


async def _answer(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    """Central's JSON answer, or CentralUnreachable saying why it refused."""
    body = await response.json(content_type=None, loads=orjson.loads)
    if response.status != 200:
        error = CentralRefused if 400 <= response.status < 500 else CentralUnreachable
        raise error(f"{what} refused ({response.status}): {body.get('detail')}")
    return body


class SyncWorker:
    """Rounds against one central node over HTTP, remembering how the last one went."""

    def __init__(self, central_url: str, token: str, timeout: float = 30.0) -> None:
        self.central_url = central_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.state = SyncState()

    def status(self) -> dict[str, Any]:
        """The full sync status: this worker's last round plus the queue and cursor."""
        status = {"enabled": True, **queue_status(), **asdict(self.state)}
        high = self.state.central_high
        status["pull_lag"] = max(0, high - status["pull_cursor"]) if high is not None else None
        return status

    async def scheduled_round(self) -> None:
        """The interval job: one round, failures logged in one line (central may be away)."""
        try:
            result = await self.run_round()
        except CentralUnreachable as exc:
            log.warning("sync round failed, will retry: %s", exc)
        else:
            if result.pushed or result.applied or result.conflicts or result.notes:
                log.info(result.summary())

    async def run_round(self) -> RoundResult:
        """One full round: push everything unsent, then pull until caught up."""
        self.state.last_attempt_at = now_iso()
        self.state.running = True
        try:
            async with aiohttp.ClientSession(timeout=self.timeout, headers=self.headers) as http:
                # Without a writer (`shopnode sync`) no API waits on this process's writes.
                result = await sync_round(HttpTransport(http, self.central_url), self.state,
                                          catch_up=not writer.installed())  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, ValueError, CentralUnreachable) as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            observe_sync_round("refused" if isinstance(exc, CentralRefused) else "unreachable")
            raise CentralUnreachable(self.state.last_error) from exc
        except Exception as exc:  # a local failure: shown in the status, not only the log
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            observe_sync_round("failed")
            raise
        finally:
            self.state.running = False
        observe_sync_round("ok")
        self.state.last_success_at = now_iso()
        self.state.last_error = None
        return result


async def sync_round(transport: Transport, state: SyncState | None = None,
                     catch_up: bool = False) -> RoundResult:  # fmt: skip
    """Push everything unsent, then pull until caught up (one round at a time per node).
    `catch_up`: nothing else writes here meanwhile (`shopnode sync`): see CatchUp."""
    result = RoundResult()
    async with round_lock():
        try:
            await push_all(transport, result)
        except CentralRefused:
            # Central refused one of our changes: keep receiving the others' anyway.
            await _pull(transport, result, state, catch_up)
            raise
        await _pull(transport, result, state, catch_up)
    return result


async def _pull(transport: Transport, result: RoundResult, state: SyncState | None,
                catch_up: bool) -> None:  # fmt: skip
    if not catch_up:
        return await pull_all(transport, result, state)
    applier = CatchUp()
    try:
        await pull_all(transport, result, state, applier)
    finally:
        await applier.close()


@contextlib.asynccontextmanager
async def round_lock(timeout: float = LOCK_WAIT) -> AsyncIterator[None]:
    """One sync round per node at a time, across processes: the worker inside `serve` and
    a manual `shopnode sync` take an exclusive lock on a file beside the database."""
    path = Path(database.obj.database + ".sync-lock")
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CentralUnreachable(
                        "another sync round is running on this node; try again later"
                    ) from None
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def push_all(transport: Transport, result: RoundResult) -> None:
    """Send every origin's changes central does not hold yet.

    Our current origin is pushed after the acknowledged sequence. When central's epoch is
    not the one we last pushed to (it was restored from a backup), every origin this node
    ever wrote under is checked too, and what central lost is sent again.
    """
    epoch = get_meta(PUSH_EPOCH)
    answer = await _push_origin(transport, result, changes.origin_id(), epoch)
    if answer is not None and answer.get("epoch") != epoch:
        for origin in changes.previous_origins():
            await _push_origin(transport, result, origin, None)
        await write(partial(set_meta, PUSH_EPOCH, answer.get("epoch") or ""))


async def _push_origin(
    transport: Transport, result: RoundResult, origin: str, epoch: str | None
) -> dict[str, Any] | None:
    """Push one origin's changes until central holds them all; returns the last answer."""
    current = origin == changes.origin_id()
    acked = int(get_meta(ACKED) or 0) if current else None
    position, reused, answer = acked or 0, [], None
    if not current:  # an old origin: ask central how far it holds it, then fill in
        answer = await transport.push({"origin": origin, "changes": []})
        position = answer["acked_seq"]
    while True:
        batch = await read(partial(_unsent, origin, position))
        if answer is not None and not batch:
            return answer
        payload = {"origin": origin, "changes": batch}
        if current and epoch:
            payload.update(acked=acked, epoch=epoch)
        answer = await transport.push(payload)
        central = answer["acked_seq"]
        result.conflicts += len(answer.get("conflicts", []))
        reused += answer.get("reused", [])
        if current and answer.get("moved"):
            # Central holds some of these under an earlier identity of ours: take its
            # numbering for them, close the gaps they leave, and send the rest again.
            origin = await write(partial(_adopt_numbering, origin, answer["moved"], acked or 0))
            position, reused = acked or 0, []
            continue
        local_high = _local_high(origin)
        sent = batch[-1]["origin_seq"] if batch else position
        if current and not reused and central > sent and local_high > sent:
            # Central holds numbers of ours past this batch: show it those changes too, so
            # it can tell by id whether they are the ones it holds (after this shop was
            # restored from a backup, they may be new changes under reused numbers).
            position = sent
            continue
        if current and (reused or central > local_high):
            # Restored from an old backup: central holds sequence numbers of ours that we
            # lost. From the first change whose number central holds under another id (or
            # after our last, when central holds more than we have), continue under a
            # fresh origin identity.
            first = min((c["origin_seq"] for c in batch if c["id"] in reused), default=None)
            origin = await write(partial(_take_new_identity, origin, first))
            acked = position = 0
            reused, epoch = [], None
            result.notes.append("restored from an older backup: took a new origin identity")
            continue
        if not current:
            if central == position and batch:
                raise CentralRefused("central accepted none of the batch (see its quarantine)")
            result.pushed += max(0, central - position)
            position = central
            continue
        if central < acked:
            result.notes.append(f"central holds only up to {central}: re-sending")
        elif central == acked and batch:
            raise CentralRefused("central accepted none of the batch (see its quarantine)")
        result.pushed += max(0, central - acked)
        acked = position = central
        epoch = answer.get("epoch")
        await write(partial(set_meta, ACKED, str(acked)))
        if acked >= local_high:
            return answer


def _unsent(origin: str, after: int) -> list[dict[str, Any]]:
    """The next batch of this origin's changes after sequence `after`."""
    rows = fetch_all(
        "SELECT id, origin, origin_seq, hlc, kind, entity_id, body, recorded_at "
        "FROM change_log WHERE origin = ? AND origin_seq > ? ORDER BY origin_seq LIMIT ?",
        (origin, after, MAX_BATCH_CHANGES),
    )
    return batches(rows)[0] if rows else []


def _local_high(origin: str) -> int:
    row = fetch_one(
        "SELECT COALESCE(MAX(origin_seq), 0) AS n FROM change_log WHERE origin = ?", (origin,)
    )
    return row["n"]


def _take_new_identity(old: str, first_unheld: int | None) -> str:
    """Continue under a fresh origin id, re-numbering (in order) our changes from the first
    one central does not hold; those before it central holds already."""
    new = uuid7()
    with database.atomic():
        if changes.origin_id() != old:
            # Another round (the CLI beside `serve`) moved first: keep its identity.
            return changes.origin_id()
        pending = fetch_all(
            "SELECT id FROM change_log WHERE origin = ? AND origin_seq >= ? ORDER BY origin_seq",
            (old, first_unheld),
        ) if first_unheld is not None else []  # fmt: skip
        for seq, row in enumerate(pending, start=1):
            database.execute_sql(
                "UPDATE change_log SET origin = ?, origin_seq = ? WHERE id = ?",
                (new, seq, row["id"]),
            )
        _switch_origin(old, new)
    log.warning("central holds changes of origin %s this node lacks: restored from a "
                "backup; continuing as origin %s", old, new)  # fmt: skip
    return new


def _switch_origin(old: str, new: str) -> None:
    """Continue as origin `new`, nothing of it acknowledged yet. Pulls skipped `old`'s
    changes as our own, and central holds some this database lacks (it was restored): read
    everything again (ids dedupe) to get them back."""
    set_meta("origin_id", new)
    set_meta("previous_origin_ids", json.dumps([*changes.previous_origins(), old]))
    set_meta(ACKED, "0")
    set_meta(CURSOR, "0")
    set_meta(CURSOR_ID, "")


def start_over_after_restore() -> str:
    """A database just restored from a backup (`shopnode restore`) takes a new origin id
    before it writes anything: central may hold the numbers after the backup's last change,
    for changes this database lacks. The next round pulls those back, and sends central
    what it lacks of every earlier origin (changes made before the backup but never sent):
    as after a restore of central, every origin is checked. Returns the new id."""
    with database.atomic():
        new = uuid7()
        _switch_origin(changes.origin_id(), new)
        set_meta(PUSH_EPOCH, "")
    return new


def _adopt_numbering(origin: str, moved: dict[str, list], acked: int) -> str:
    """Changes central holds under another of our identities keep central's numbering; the
    rest of `origin`'s unacknowledged changes close up after `acked`, in order."""
    with database.atomic():
        if changes.origin_id() != origin:
            return changes.origin_id()  # another round moved first
        known = set(changes.shop_origins())
        for change_id, (held_origin, held_seq) in moved.items():
            database.execute_sql(
                "UPDATE change_log SET origin = ?, origin_seq = ? WHERE id = ?",
                (held_origin, held_seq, change_id),
            )
            if held_origin not in known:
                known.add(held_origin)
                set_meta("previous_origin_ids",
                         json.dumps([*changes.previous_origins(), held_origin]))  # fmt: skip
        rest = fetch_all(
            "SELECT id FROM change_log WHERE origin = ? AND origin_seq > ? ORDER BY origin_seq",
            (origin, acked),
        )
        for seq, row in enumerate(rest, start=acked + 1):
            database.execute_sql("UPDATE change_log SET origin_seq = ? WHERE id = ?",
                                 (seq, row["id"]))  # fmt: skip
    return origin


async def pull_all(transport: Transport, result: RoundResult, state: SyncState | None,
                   catch_up: CatchUp | None = None) -> None:  # fmt: skip
    """Apply pages of others' changes, each with its cursor, until caught up. With
    `catch_up`, pages are checked here and applied on its thread, several per transaction,
    while the next one is received and checked."""
    origin = changes.origin_id()
    cursor, cursor_id = int(get_meta(CURSOR) or 0), get_meta(CURSOR_ID) or ""
    epoch = get_meta(PULL_EPOCH) or ""
    result.applied += await write(partial(_retry_clock_waits, origin))

    async def pulled(cursor: int, cursor_id: str, epoch: str) -> Pulled:
        page = await transport.pull(cursor, PULL_PAGE, origin, cursor_id, epoch)
        return page, _check_page(page["changes"]) if catch_up and not page.get("reset") else None

    def fetch(cursor: int, cursor_id: str, epoch: str) -> asyncio.Future[Pulled]:
        return asyncio.ensure_future(pulled(cursor, cursor_id, epoch))

    next_page, prefetched = fetch(cursor, cursor_id, epoch), False
    try:
        while True:
            if catch_up:
                await catch_up.commit_unless(next_page)  # not while waiting on the network
            try:
                page, checked = await next_page
            except TimeoutError:
                if not prefetched:
                    raise
                # Its clock ran while apply_page held the event loop: ask again, now.
                page, checked = await pulled(cursor, cursor_id, epoch)
            if state is not None:
                state.central_high = page["high"]
            if page.get("reset"):
                # Another epoch of central's history: read it all again (ids dedupe).
                result.notes.append("central was restored from a backup: "
                                    "re-reading from the start")  # fmt: skip
                cursor, cursor_id, epoch = 0, "", page.get("epoch") or ""
                next_page, prefetched = fetch(cursor, cursor_id, epoch), False
                continue
            epoch = page.get("epoch") or ""
            if page["more"]:
                # Central prepares the next page while this one is applied: the request goes
                # out before apply_page holds the event loop (bench/sync.py catch-up).
                next_page, prefetched = fetch(page["next"], page["next_id"], epoch), True
                await asyncio.sleep(0)
            if catch_up:
                applied, conflicts = await catch_up.apply(page["changes"], checked, page["next"],
                                                          page["next_id"], origin, epoch)
            else:
                applied, conflicts = await apply_in_slices(page["changes"], page["next"],
                                                           page["next_id"], origin, epoch)
            result.pulled += len(page["changes"])
            result.applied += applied
            result.conflicts += conflicts
            cursor, cursor_id = page["next"], page["next_id"]
            if not page["more"]:
                if catch_up:
                    await catch_up.commit()
                return
    finally:
        next_page.cancel()
        if next_page.done() and not next_page.cancelled():
            next_page.exception()  # retrieved: the round already fails for its own reason


async def apply_in_slices(
    page: list[dict[str, Any]], next_cursor: int, next_id: str, origin: str, epoch: str
) -> tuple[int, int]:
    """Apply a pulled page on the writer. Inside `serve` it goes in slices, each its own
    transaction, so the API's writes wait for one slice, not a whole page; the cursor moves
    with the last. A crash between slices re-reads the page: applying is idempotent."""
    size = APPLY_SLICE if writer.installed() else max(len(page), 1)
    parts = [page[start : start + size] for start in range(0, len(page), size)] or [[]]
    applied = conflicts = 0
    for part in parts[:-1]:
        counts = await write(partial(apply_changes, part, origin))
        applied, conflicts = applied + counts[0], conflicts + counts[1]
    counts = await write(partial(apply_page, parts[-1], next_cursor, next_id, origin, epoch))
    return applied + counts[0], conflicts + counts[1]


def _retry_clock_waits(origin: str) -> int:
    with database.atomic(), merge.totals_derived():
        return merge.retry_clock_waits(origin)


def apply_one(raw: dict[str, Any], origin: str) -> str:
    """Apply one pulled change and bring the totals it feeds up to date."""
    checked, malformed = _check_page([raw])
    with database.atomic(), merge.totals_derived():
        _quarantine_malformed(malformed)
        outcome = merge.apply_isolated(checked[0][0], origin) if checked else "invalid"
    checkpoint_if_due()
    return outcome


Checked = tuple[dict[str, Any], dict[str, Any]]  # a change and its parsed body
# A page's good changes and its malformed ones: (id, why).
CheckedPage = tuple[list[Checked], list[tuple[str | None, str]]]
Pulled = tuple[dict[str, Any], CheckedPage | None]  # central's answer, and its changes checked


def _check_page(page: list[Any]) -> CheckedPage:
    """The changes checked for their shape, with their parsed bodies, and the malformed ones
    (id, why): those are quarantined (reported, not applied) rather than blocking every
    later one. Before the write transaction: checking takes no lock."""
    checked, malformed = [], []
    for raw in page:
        try:
            checked.append(checked_change(raw))
        except ProtocolError as exc:
            change_id = raw.get("id") if isinstance(raw, dict) else None
            malformed.append((change_id if isinstance(change_id, str) else None, str(exc)))
    return checked, malformed


def _quarantine_malformed(malformed: list[tuple[str | None, str]]) -> None:
    for change_id, why in malformed:
        merge.report("quarantined", f"malformed change: {why}", change_id)


def apply_page(
    page: list[dict[str, Any]], next_cursor: int, next_id: str, origin: str, epoch: str = "",
    checked: CheckedPage | None = None,
) -> tuple[int, int]:
    """Apply one pulled page and its cursor in one transaction: (applied, conflicts).
    A slice of a page may be applied alone, with the cursor and id of its last change.
    `checked`: the page as _check_page found it, if it was checked already."""
    with database.atomic():
        counts = apply_changes(page, origin, checked)
        set_meta(CURSOR, str(next_cursor))
        set_meta(CURSOR_ID, next_id)
        set_meta(PULL_EPOCH, epoch)
    checkpoint_if_due()  # a scrub's, now that the page is committed
    return counts


def apply_changes(page: list[dict[str, Any]], origin: str,
                  checked: CheckedPage | None = None) -> tuple[int, int]:  # fmt: skip
    """Apply pulled changes, leaving the cursor where it is: (applied, conflicts)."""
    good, malformed = checked or _check_page(page)
    with database.atomic():
        _quarantine_malformed(malformed)
        outcomes = merge.apply_page([change for change, _ in good], origin,
                                    [body for _, body in good])  # fmt: skip
    checkpoint_if_due()
    quiet = ("applied", "duplicate", "pending")
    return outcomes.count("applied"), len(malformed) + sum(o not in quiet for o in outcomes)


class CatchUp:
    """Pulled pages applied on a thread of its own, so that the next page is received,
    parsed and checked while this one is written, and several pages to a transaction
    (COMMIT_CHANGES, COMMIT_SECONDS): for a round nothing else in this process writes
    beside (`shopnode sync`). Each page's cursor is written with it, so a crash keeps the
    pages of the transactions committed before it and reads the rest again."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shopnode-catch-up",
                                          initializer=_catch_up_cache)  # fmt: skip
        self._open: contextlib.ExitStack | None = None  # the transaction pages go into
        self._since = 0.0
        self._changes = 0
        # What a transaction may hold: the first page goes alone, so a round that brings
        # little commits it at once; each later one may hold twice the one before.
        self._limit = 1

    async def apply(self, page: list[dict[str, Any]], checked: CheckedPage | None,
                    next_cursor: int, next_id: str, origin: str, epoch: str,
                    ) -> tuple[int, int]:  # fmt: skip
        return await self._run(partial(self._apply, page, checked, next_cursor, next_id,
                                       origin, epoch))  # fmt: skip

    async def commit_unless(self, page: asyncio.Future[Pulled]) -> None:
        """Commit unless `page` arrives within the time left to the open transaction."""
        if self._open is not None and not page.done():
            left = COMMIT_SECONDS - (time.monotonic() - self._since)
            if left > 0:
                await asyncio.wait({page}, timeout=left)
            if not page.done():
                await self.commit()

    async def commit(self) -> None:
        """Commit the pages applied so far (none: nothing to do)."""
        if self._open is not None:
            await self._run(self._commit)

    async def close(self) -> None:
        """Roll back what is not committed (the round failed), and let the thread go."""
        try:
            await self._run(self._close)
        finally:
            self._thread.shutdown()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _apply(self, page: list[dict[str, Any]], checked: CheckedPage | None,
               next_cursor: int, next_id: str, origin: str, epoch: str,
               ) -> tuple[int, int]:  # fmt: skip
        if self._open is None:
            self._open = contextlib.ExitStack()
            self._open.enter_context(database.transaction())
            self._open.enter_context(merge.totals_deferred())  # derived once, at commit
            self._since, self._changes = time.monotonic(), 0
        counts = apply_page(page, next_cursor, next_id, origin, epoch, checked)
        self._changes += len(page)
        if self._changes >= self._limit or time.monotonic() - self._since >= COMMIT_SECONDS:
            self._limit = min(COMMIT_CHANGES, 2 * self._changes)
            self._commit()
            hand_over_lock()  # to a waiting serve; the next page is received meanwhile
        return counts

    def _commit(self) -> None:
        transaction, self._open = self._open, None
        if transaction is not None:
            transaction.close()
            checkpoint_if_due()

    def _close(self) -> None:
        transaction, self._open = self._open, None
        try:
            if transaction is not None:
                failed = RuntimeError("the round failed")
                transaction.__exit__(RuntimeError, failed, None)  # rolls back, derives nothing
        finally:
            database.close()


def _catch_up_cache() -> None:
    database.execute_sql(f"PRAGMA cache_size = -{CATCH_UP_CACHE_KIB}")


def install(app: web.Application, central_url: str, token: str, interval: int) -> None:
    """Run the worker inside a node app: a round at start-up, then one every `interval` s."""
    worker = SyncWorker(central_url, token)
    app[HEALTH]["sync"] = worker.status

    async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
        # One round at a time; rounds missed while one runs collapse into one.
        scheduler = AsyncIOScheduler()
        scheduler.add_job(worker.scheduled_round, "interval", seconds=interval,
                          max_instances=1, coalesce=True, next_run_time=datetime.now(),
                          id="sync")  # fmt: skip
        scheduler.start()
        yield
        scheduler.shutdown(wait=False)
        # Let a round in flight finish its page (each page is one transaction anyway).
        for _ in range(100):
            if not worker.state.running:
                break
            await asyncio.sleep(0.05)

    app.cleanup_ctx.append(scheduler_context)
