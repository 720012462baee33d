"""The shop node's aiohttp application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from node import changes, db, settings
from node.api import customers, money, openapi
from node.api.auth import auth_middleware
from node.api.keys import CONFIG, HEALTH, STARTED_AT
from node.api.problems import problems_middleware
from node.config import Config

MAX_BODY = 1024 * 1024  # 1 MiB; larger bodies get 413

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness plus what the sync worker and the bot report about themselves."""
    db.database.execute_sql("SELECT 1")
    body = {
        "status": "ok",
        "node": request.app[CONFIG].node.name,
        "uptime_seconds": round(time.monotonic() - request.app[STARTED_AT], 1),
    }
    for name, report in request.app[HEALTH].items():
        body[name] = report()
    return web.json_response(body)


@routes.get("/api/v1/sync/status")
async def sync_status(request: web.Request) -> web.Response:
    """Last success, push queue depth, oldest unsent change, pull lag, reported conflicts."""
    report = request.app[HEALTH].get("sync")
    return web.json_response(report() if report else {"enabled": False, **changes.queue_status()})


def initial_settings(config: Config) -> dict:
    return {
        "earn_rate": config.loyalty.earn_rate,
        "point_value": config.loyalty.point_value,
        "currency": config.node.currency,
        "default_credit_limit": None,
    }


def create_app(
    config: Config, extensions: list[Callable[[web.Application], None]] = ()
) -> web.Application:
    """Build the node app; `extensions` add the sync worker and the bot (cli.py wires them)."""
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[CONFIG] = config
    app[STARTED_AT] = time.monotonic()
    app[HEALTH] = {}
    app.add_routes(routes)
    app.add_routes(customers.routes)
    app.add_routes(money.routes)
    app.add_routes(openapi.routes)
    app.cleanup_ctx.append(database_context)
    for extend in extensions:
        extend(app)
    return app


async def database_context(app: web.Application) -> AsyncIterator[None]:
    """Open and upgrade the database on start-up; close it on shutdown."""
    config = app[CONFIG]
    database = db.open_database(config.database_path)
    settings.seed_settings(initial_settings(config))
    yield
    database.close()
