"""GET /api/v1/status: the shop node at a glance, for its owner (and the bot's /status)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import backup
from node.api.auth import require_owner
from node.api.keys import BACKUPS, CONFIG, HEALTH
from node.api.params import json_response
from node.clock import current_clock
from sync.progress import queue_status

routes = web.RouteTableDef()

# What the status shows of /api/v1/sync/status (which has the whole of it).
SYNC_SUMMARY = ("enabled", "last_success_at", "last_error", "push_queue_depth",
                "oldest_unsent_age_seconds", "pull_lag", "pending", "reports")  # fmt: skip


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    """Version, shop, timezone, database size, last backup and sync (owners only)."""
    from node.api.app import VERSION  # app.py imports this module for its routes

    require_owner(request, "read the node's status")
    config = request.app[CONFIG]
    return json_response({
        "version": VERSION,
        "shop_name": config.node.name,
        "timezone": str(current_clock().zone),  # [node] timezone: the shop's day
        "database_size_bytes": backup.database_size(config.database_path),
        "backup": backup.report(config.backup_dir, request.app.get(BACKUPS)),
        "sync": sync_summary(request.app),
    })  # fmt: skip


def sync_summary(app: web.Application) -> dict[str, Any]:
    report = app[HEALTH].get("sync")
    full = report() if report else {"enabled": False, **queue_status()}
    return {key: full.get(key) for key in SYNC_SUMMARY}
