"""The central node: stores push their changes, and pull everyone else's.

Database work runs in a small thread pool so a slow PostgreSQL never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import peewee
from aiohttp import web

from node.api.problems import problem, problems_middleware
from node.config import Config, ConfigError
from node.metrics import central_pulled, central_pushed
from sync.checkers import Checkers
from sync.protocol import (
    MAX_BATCH_BYTES,
    MAX_PULL_LIMIT,
    PULL_PATH,
    PUSH_PATH,
    STATUS_PATH,
    Refused,
    integer,
)
from sync.store import CentralStore, DatabaseUnavailable, Forbidden

MAX_CURSOR = 2**62

log = logging.getLogger("shopnode.central")

STORE = web.AppKey("store", CentralStore)
POOL = web.AppKey("pool", ThreadPoolExecutor)
STORE_ID = web.RequestKey("store_id", str)


async def run_db(request: web.Request, work: Callable[..., Any], *args: Any) -> Any:
    """Store work in the pool; a database that cannot be reached is DatabaseUnavailable."""
    try:
        return await asyncio.get_running_loop().run_in_executor(request.app[POOL], work, *args)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc).strip().splitlines()[0] or "connection lost") from exc


@web.middleware
async def database_unavailable(request: web.Request, handler: Callable) -> web.StreamResponse:
    """A database that cannot be reached is a 503 with Retry-After, never a 500."""
    try:
        return await handler(request)
    except DatabaseUnavailable as exc:
        log.warning("central database unavailable: %s", exc)
        response = problem(503, "central's database is unavailable; try again shortly")
        response.headers["Retry-After"] = "5"
        return response


@web.middleware
async def store_auth(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every /sync route needs a store token; the store id comes from the token."""
    if not request.path.startswith("/sync/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not token.strip().isascii():
        return problem(401, "send the store token: 'Authorization: Bearer TOKEN'")
    store_id = await run_db(request, request.app[STORE].store_for_token, token.strip())
    if store_id is None:
        return problem(401, "this store token is not valid")
    request[STORE_ID] = store_id
    return await handler(request)


routes = web.RouteTableDef()


CHECKERS = web.AppKey("checkers", Checkers)


@routes.post(PUSH_PATH)
async def push(request: web.Request) -> web.Response:
    """Take a batch of one origin's changes, idempotently."""
    try:
        raw = await request.read()
    except web.HTTPException:
        raise
    except Exception as exc:  # a body marked gzip that is not, a cut-off upload
        return problem(400, f"unreadable push body: {exc}")
    checked = await request.app[CHECKERS].check(raw)
    if isinstance(checked, Refused):
        if checked.log:
            log.warning("refused a push from store %s: %s", request[STORE_ID], checked.log)
        if checked.errors is None:
            return problem(checked.status, checked.detail)
        return problem(checked.status, checked.detail, errors=checked.errors,
                       change_id=checked.change_id)  # fmt: skip
    origin, batch, acked, epoch = checked
    try:
        result = await run_db(request, request.app[STORE].push, request[STORE_ID], origin,
                              batch, acked, epoch)  # fmt: skip
    except Forbidden as exc:
        log.warning("refused a push from store %s: %s", request[STORE_ID], exc)
        return problem(403, str(exc))
    if result["conflicts"]:
        log.warning("quarantined %d conflicting changes from origin %s",
                    len(result["conflicts"]), origin)  # fmt: skip
    central_pushed(request.app, request[STORE_ID], result.pop("stored"))
    return web.json_response(result)


@routes.get(PULL_PATH)
async def pull(request: web.Request) -> web.Response:
    """Changes of every other origin after a cursor, in commit order."""
    try:
        after = integer(0, MAX_CURSOR)(int(request.query.get("after", "0")))
        limit = min(int(request.query.get("limit", "500")), MAX_PULL_LIMIT)
        origin = request.query["origin"]
        after_id = request.query.get("after_id", "")
        epoch = request.query.get("epoch", "")
        if limit < 1:
            raise ValueError("limit must be >= 1")
    except (ValueError, KeyError) as exc:
        return problem(400, f"pull needs after (0 to {MAX_CURSOR}), limit (int) and "
                            f"origin: {exc}")  # fmt: skip
    page = await run_db(request, request.app[STORE].pull, after, limit, origin, after_id, epoch)
    central_pulled(request.app, request[STORE_ID], page)
    # orjson: ~10x json.dumps on a page, in the event loop that takes every push too.
    response = web.json_response(page, dumps=_json_text)
    response.enable_compression()
    return response


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # text orjson refuses (a lone surrogate of an old body): escaped
        return json.dumps(value)


@routes.get(STATUS_PATH)
async def status(request: web.Request) -> web.Response:
    """Counts: changes held, high cursor, stores, quarantined changes."""
    return web.json_response(await run_db(request, request.app[STORE].status))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Up, and whether the database answers (503 while it does not)."""
    try:
        await run_db(request, request.app[STORE].ping)
    except DatabaseUnavailable:
        return web.json_response({"status": "unavailable", "role": "central",
                                  "database": False}, status=503)  # fmt: skip
    return web.json_response({"status": "ok", "role": "central", "database": True})


def create_central_app(database_url: str) -> web.Application:
    # Room for a full batch of large changes, gzip or not.
    app = web.Application(middlewares=[problems_middleware, database_unavailable, store_auth],
                          client_max_size=4 * MAX_BATCH_BYTES)  # fmt: skip
    app.add_routes(routes)

    async def storage(app: web.Application) -> AsyncIterator[None]:
        app[CHECKERS] = Checkers()
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="central-db")
        app[POOL] = pool
        app[STORE] = await asyncio.get_running_loop().run_in_executor(
            pool, CentralStore, database_url
        )
        yield
        pool.shutdown(wait=True)
        app[CHECKERS].close()
        app[STORE].close()

    app.cleanup_ctx.append(storage)
    return app


def lock_path(database_url: str) -> Path | None:
    """The file a running SQLite central holds locked (None for PostgreSQL)."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url.split("sqlite:///", 1)[1]
    return Path(path + ".lock") if path and path != ":memory:" else None


@contextlib.contextmanager
def running_lock(database_url: str) -> Iterator[None]:
    """Held while central serves, so `central restore` can refuse to pull the rug."""
    path = lock_path(database_url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("central.database: another central is running on "
                              f"{path.with_suffix('')}") from None  # fmt: skip
        yield


def restore(config: Config, backup: Path | None) -> str:
    """Install a backup of a SQLite central (the current database is moved aside, never
    deleted), or only take a new epoch; either way every store's cursor starts over and
    stores re-send what the backup lacks."""
    url = config.central.database
    if backup is None:
        store = CentralStore(url)
        try:
            with store.db.atomic():
                return f"central takes a new epoch {store.new_epoch('declared restored')}"
        finally:
            store.close()
    if lock_path(url) is None:
        raise ConfigError("central.database: a PostgreSQL central is restored with pg_restore; "
                          "then run `shopnode central restore --epoch-only`")  # fmt: skip
    if not backup.is_file():
        raise OSError(f"no backup file at {backup}")
    check = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise OSError(f"{backup} is not a SQLite database: {exc}") from None
    finally:
        check.close()
    if result != "ok":
        raise OSError(f"{backup} fails its integrity check: {result}")
    if not {"change", "origin", "store"} <= tables:
        raise OSError(f"{backup} is not a backup of a central database")
    target = Path(url.split("sqlite:///", 1)[1])
    with running_lock(url):
        aside = None
        if target.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = target.with_name(f"{target.name}.before-restore-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                moved = Path(str(target) + suffix)
                if moved.exists():
                    moved.rename(Path(str(aside) + suffix))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backup, target)
        store = CentralStore(url)
        try:
            with store.db.atomic():
                epoch = store.new_epoch(f"restored from {backup}")
        finally:
            store.close()
    kept = f"; the previous database is kept as {aside}" if aside else ""
    return f"central restored from {backup}, new epoch {epoch}{kept}"


def add_store(config: Config, name: str) -> dict[str, str]:
    store = CentralStore(config.central.database)
    try:
        return store.add_store(name)
    finally:
        store.close()
