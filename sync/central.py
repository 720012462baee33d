"""The central node: stores push their changes, and pull everyone else's (CONTRACT §4).

Database work runs in a small thread pool so a slow PostgreSQL never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from node.api.problems import problem, problems_middleware
from node.config import Config
from sync.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_CHANGES,
    MAX_PULL_LIMIT,
    PULL_PATH,
    PUSH_PATH,
    STATUS_PATH,
    ProtocolError,
    check_change,
)
from sync.store import CentralStore, Forbidden

log = logging.getLogger("shopnode.central")

STORE = web.AppKey("store", CentralStore)
POOL = web.AppKey("pool", ThreadPoolExecutor)
STORE_ID = web.RequestKey("store_id", str)


async def run_db(request: web.Request, work: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(request.app[POOL], work, *args)


@web.middleware
async def store_auth(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every /sync route needs a store token; the store id comes from the token."""
    if not request.path.startswith("/sync/"):
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return problem(401, "send the store token: 'Authorization: Bearer TOKEN'")
    store_id = await run_db(request, request.app[STORE].store_for_token, token.strip())
    if store_id is None:
        return problem(401, "this store token is not valid")
    request[STORE_ID] = store_id
    return await handler(request)


routes = web.RouteTableDef()


@routes.post(PUSH_PATH)
async def push(request: web.Request) -> web.Response:
    """Take a batch of one origin's changes, idempotently."""
    try:
        raw = await request.read()
    except web.HTTPException:
        raise
    except Exception as exc:  # a body marked gzip that is not, a cut-off upload
        return problem(400, f"unreadable push body: {exc}")
    try:
        payload = json.loads(raw)
        origin = payload["origin"]
        if not isinstance(origin, str) or not isinstance(payload["changes"], list):
            raise ProtocolError("origin must be a string and changes a list")
        if len(payload["changes"]) > MAX_BATCH_CHANGES:
            raise ProtocolError(f"at most {MAX_BATCH_CHANGES} changes per push")
        batch = [check_change(c) for c in payload["changes"]]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return problem(400, f"malformed push: {exc}")
    try:
        result = await run_db(request, request.app[STORE].push, request[STORE_ID], origin, batch)
    except Forbidden as exc:
        log.warning("refused a push from store %s: %s", request[STORE_ID], exc)
        return problem(403, str(exc))
    if result["conflicts"]:
        log.warning("quarantined %d conflicting changes from origin %s",
                    len(result["conflicts"]), origin)  # fmt: skip
    return web.json_response(result)


@routes.get(PULL_PATH)
async def pull(request: web.Request) -> web.Response:
    """Changes of every other origin after a cursor, in commit order."""
    try:
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", "500")), MAX_PULL_LIMIT)
        origin = request.query["origin"]
        after_id = request.query.get("after_id", "")
        if after < 0 or limit < 1:
            raise ValueError("after must be >= 0 and limit >= 1")
    except (ValueError, KeyError) as exc:
        return problem(400, f"pull needs after (int), limit (int) and origin: {exc}")
    page = await run_db(request, request.app[STORE].pull, after, limit, origin, after_id)
    response = web.json_response(page)
    response.enable_compression()
    return response


@routes.get(STATUS_PATH)
async def status(request: web.Request) -> web.Response:
    """Counts: changes held, high cursor, stores, quarantined changes."""
    return web.json_response(await run_db(request, request.app[STORE].status))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    await run_db(request, request.app[STORE].status)
    return web.json_response({"status": "ok", "role": "central"})


def create_central_app(database_url: str) -> web.Application:
    # Room for a full batch of large changes, gzip or not.
    app = web.Application(middlewares=[problems_middleware, store_auth],
                          client_max_size=4 * MAX_BATCH_BYTES)  # fmt: skip
    app.add_routes(routes)

    async def storage(app: web.Application) -> AsyncIterator[None]:
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="central-db")
        app[POOL] = pool
        app[STORE] = await asyncio.get_running_loop().run_in_executor(
            pool, CentralStore, database_url
        )
        yield
        pool.shutdown(wait=True)
        app[STORE].close()

    app.cleanup_ctx.append(storage)
    return app


def add_store(config: Config, name: str) -> dict[str, str]:
    store = CentralStore(config.central.database)
    try:
        return store.add_store(name)
    finally:
        store.close()
