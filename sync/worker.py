"""The sync worker: push this node's changes, then pull and apply everyone else's.

Push sends changes after the acknowledged sequence, in bounded batches; central answers
with the highest contiguous sequence it holds, which becomes the new acknowledgement (lower
than ours means central lost data in a restore: we re-send). Pull applies each page and
its cursor in one transaction, so a crash mid-pull re-applies nothing and skips nothing.
If central holds more of our origin than we do, this node was restored from an old backup:
it takes a new origin identity so it never reuses a sequence number, and the pull brings
its lost changes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aiohttp
import peewee
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from node import changes
from node.api.keys import HEALTH
from node.changes import ACKED, CURSOR, CURSOR_ID
from node.db import database, fetch_all, fetch_one, get_meta, set_meta
from node.ids import now_iso, uuid7
from sync import merge
from sync.protocol import (
    MAX_BATCH_CHANGES,
    PULL_PATH,
    PUSH_PATH,
    ProtocolError,
    batches,
    check_change,
    gzip_json,
)

log = logging.getLogger("shopnode.sync")

PULL_PAGE = 500


class CentralUnreachable(Exception):
    """Central could not be reached or answered with an error."""


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

    async def pull(self, after: int, limit: int, origin: str, after_id: str) -> dict[str, Any]:
        ...


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

    async def pull(self, after: int, limit: int, origin: str, after_id: str) -> dict[str, Any]:
        params = {"after": str(after), "limit": str(limit), "origin": origin,
                  "after_id": after_id}  # fmt: skip
        async with self.http.get(self.central_url + PULL_PATH, params=params) as response:
            return await _answer(response, "pull")


async def _answer(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    """Central's JSON answer, or CentralUnreachable saying why it refused."""
    body = await response.json(content_type=None)
    if response.status != 200:
        raise CentralUnreachable(f"{what} refused ({response.status}): {body.get('detail')}")
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
        status = {"enabled": True, **changes.queue_status(), **asdict(self.state)}
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
                result = await sync_round(HttpTransport(http, self.central_url), self.state)
        except (aiohttp.ClientError, TimeoutError, ValueError, CentralUnreachable) as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            raise CentralUnreachable(self.state.last_error) from exc
        finally:
            self.state.running = False
        self.state.last_success_at = now_iso()
        self.state.last_error = None
        return result


async def sync_round(transport: Transport, state: SyncState | None = None) -> RoundResult:
    """Push everything unsent, then pull until caught up."""
    result = RoundResult()
    await push_all(transport, result)
    await pull_all(transport, result, state)
    return result


async def push_all(transport: Transport, result: RoundResult) -> None:
    """Send changes after the acknowledged sequence until central holds them all."""
    origin = changes.origin_id()
    acked = int(get_meta(ACKED) or 0)
    position, reused = acked, []
    while True:
        batch = _unsent(origin, position)
        answer = await transport.push({"origin": origin, "changes": batch})
        central = answer["acked_seq"]
        result.conflicts += len(answer.get("conflicts", []))
        reused += answer.get("reused", [])
        local_high = _local_high(origin)
        if reused or central > local_high:
            # Restored from an old backup: central holds sequence numbers of ours that we
            # lost. Walk on while central holds what we send; from the first change whose
            # number it holds under another id, move everything to a fresh origin identity.
            if not reused and batch and batch[-1]["origin_seq"] < local_high:
                position = batch[-1]["origin_seq"]
                continue
            first = min((c["origin_seq"] for c in batch if c["id"] in reused), default=None)
            origin, acked = _take_new_identity(origin, first), 0
            position, reused = 0, []
            result.notes.append("restored from an older backup: took a new origin identity")
            continue
        if central < acked:
            result.notes.append(f"central holds only up to {central}: re-sending")
        elif central == acked and batch:
            raise CentralUnreachable("central accepted none of the batch (see its quarantine)")
        result.pushed += max(0, central - acked)
        acked = position = central
        with database.atomic():
            set_meta(ACKED, str(acked))
        if acked >= local_high:
            return


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
        pending = fetch_all(
            "SELECT id FROM change_log WHERE origin = ? AND origin_seq >= ? ORDER BY origin_seq",
            (old, first_unheld),
        ) if first_unheld is not None else []  # fmt: skip
        for seq, row in enumerate(pending, start=1):
            database.execute_sql(
                "UPDATE change_log SET origin = ?, origin_seq = ? WHERE id = ?",
                (new, seq, row["id"]),
            )
        set_meta("origin_id", new)
        set_meta("previous_origin_ids", json.dumps([*changes.previous_origins(), old]))
        set_meta(ACKED, "0")
    log.warning("central holds changes of origin %s this node lacks: restored from a "
                "backup; continuing as origin %s", old, new)  # fmt: skip
    return new


async def pull_all(transport: Transport, result: RoundResult, state: SyncState | None) -> None:
    """Apply pages of others' changes, each with its cursor, until caught up."""
    origin = changes.origin_id()
    cursor, cursor_id = int(get_meta(CURSOR) or 0), get_meta(CURSOR_ID) or ""
    while True:
        page = await transport.pull(cursor, PULL_PAGE, origin, cursor_id)
        if state is not None:
            state.central_high = page["high"]
        if page.get("reset"):
            # Central was restored from an older backup: read it all again (ids dedupe).
            result.notes.append("central no longer holds our cursor: re-reading from the start")
            cursor, cursor_id = 0, ""
            continue
        applied, conflicts = apply_page(page["changes"], page["next"], page["next_id"], origin)
        result.pulled += len(page["changes"])
        result.applied += applied
        result.conflicts += conflicts
        cursor, cursor_id = page["next"], page["next_id"]
        if not page["more"]:
            return


def apply_one(raw: dict[str, Any], origin: str) -> str:
    """Apply one pulled change in a savepoint; a change that cannot apply is reported and
    skipped rather than blocking every later one (a re-read retries it)."""
    try:
        change = check_change(raw)
    except ProtocolError as exc:
        merge.report("invalid", str(exc), raw.get("id") if isinstance(raw, dict) else None)
        return "invalid"
    try:
        with database.atomic():
            return merge.apply_change(change, origin)
    except peewee.IntegrityError as exc:
        merge.report("unapplied", f"{change['kind']} could not be applied: {exc}", change["id"])
        return "unapplied"


def apply_page(
    page: list[dict[str, Any]], next_cursor: int, next_id: str, origin: str
) -> tuple[int, int]:
    """Apply one pulled page and its cursor in one transaction."""
    applied = conflicts = 0
    with database.atomic():
        for raw in page:
            outcome = apply_one(raw, origin)
            applied += outcome == "applied"
            conflicts += outcome != "applied" and outcome != "duplicate"
        # A second worker may have gone further; re-reading a page is harmless (ids dedupe).
        set_meta(CURSOR, str(next_cursor))
        set_meta(CURSOR_ID, next_id)
    return applied, conflicts


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
