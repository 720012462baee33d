"""The shop node's aiohttp application factory."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from node import db
from node.api import access, customers, ledger, loyalty, openapi, reports, sales, settings, status
from node.api import telegram as telegram_routes
from node.api.auth import FailedAuth, auth_middleware
from node.api.keys import AUTH_FAILURES, CONFIG, GUARD_LOOP_WRITES, HEALTH, STARTED_AT, WRITER
from node.api.problems import problems_middleware
from node.clock import Clock, current_clock, seconds_since, use_clock
from node.config import Config
from node.settings import seed_settings
from node.writer import READER_CACHE_KIB, Writer, read_only_here
from node.writer import install as install_writer
from sync.progress import queue_status

MAX_BODY = 1024 * 1024  # 1 MiB; larger bodies get 413

routes = web.RouteTableDef()


VERSION = importlib.metadata.version("shopnode")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness only: anyone on the shop's network can read it, so it names no data."""
    db.database.execute_sql("SELECT 1")
    body: dict[str, Any] = {
        "status": "ok",
        "version": VERSION,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED_AT], 1),
    }
    for name, report in request.app[HEALTH].items():
        body[name] = liveness(report())
    return web.json_response(body)


def liveness(details: dict[str, Any]) -> dict[str, Any]:
    """A component's health flag and lag in seconds, out of its detailed report.

    The bot reports `healthy`/`lag_seconds` itself; the sync worker's status says when the
    last round succeeded and whether the latest one failed.
    """
    if "healthy" in details:
        return {"healthy": bool(details["healthy"]), "lag_seconds": details.get("lag_seconds")}
    return {
        "healthy": details.get("last_error") is None,
        "lag_seconds": seconds_since(details.get("last_success_at")),
    }


@routes.get("/api/v1/sync/status")
async def sync_status(request: web.Request) -> web.Response:
    """Last success, push queue depth, oldest unsent change, pull lag, reported conflicts."""
    report = request.app[HEALTH].get("sync")
    return web.json_response(report() if report else {"enabled": False, **queue_status()})


def initial_settings(config: Config) -> dict:
    return {
        "earn_rate": config.loyalty.earn_rate,
        "point_value": config.loyalty.point_value,
        "currency": config.node.currency,
        "default_credit_limit": None,
    }


def create_app(
    config: Config,
    extensions: list[Callable[[web.Application], None]] = (),
    clock: Clock | None = None,
    guard_loop_writes: bool = False,
) -> web.Application:
    """Build the node app; `extensions` add what runs beside the API (cli.py: the sync worker).
    `clock` replaces the system clock for everything the node stamps (one per process); its
    zone becomes `[node] timezone`.
    `guard_loop_writes` makes the event loop's connection read-only once the node is up
    (`serve` does: every write goes through node.writer; in-process tests write directly).

    The bot is not one of them: it needs the node's URL, known only once the node listens
    (cli.bot_in_node)."""
    if clock is not None:
        use_clock(clock)
    current_clock().zone = config.zone  # the shop's day: receipts, date filters, ageing
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[CONFIG] = config
    app[STARTED_AT] = time.monotonic()
    app[GUARD_LOOP_WRITES] = guard_loop_writes
    app[HEALTH] = {}
    app[AUTH_FAILURES] = FailedAuth()
    access.install(app)
    if config.metrics.enabled:  # Prometheus's client is ~3.5 MB of a node's memory
        from node import metrics

        metrics.install(app, config.metrics)
    app.add_routes(routes)
    for module in (customers, ledger, loyalty, sales, settings, reports, status,
                   telegram_routes, openapi):  # fmt: skip
        app.add_routes(module.routes)
    app.cleanup_ctx.append(database_context)
    for extend in extensions:
        extend(app)
    return app


async def database_context(app: web.Application) -> AsyncIterator[None]:
    """Open and upgrade the database and start its writer; on shutdown, finish the writes
    already queued and close it."""
    config = app[CONFIG]
    database = db.open_database(config.database_path)
    seed_settings(initial_settings(config))
    # A search reads each trigram's list in every segment of the index, and an import, a
    # catch-up or a shop's customers added one by one leave a dozen or more: serve starts
    # with one (a no-op when it is one already; ~0.2 s for 100k customers when not).
    db.checkpoint()
    writer = Writer()
    writer.start()
    install_writer(writer)
    if app[GUARD_LOOP_WRITES]:
        read_only_here()
        # The loop's connection only reads now, point reads by key: a reader's page cache
        # will do (the OS caches the file), not the writer's, which random GETs fill.
        db.database.execute_sql(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    app[WRITER] = writer
    try:
        yield
    finally:
        install_writer(None)
        writer.stop()
        database.close()
