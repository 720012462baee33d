"""Typed application and request keys, in one place."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.config import Config

CONFIG = web.AppKey("config", Config)
STARTED_AT = web.AppKey("started_at", float)
# Extra /healthz sections contributed by the sync worker and the bot: name -> callable.
HEALTH = web.AppKey("health", dict[str, Any])
# Failed authentications per client address (node.api.auth.FailedAuth).
AUTH_FAILURES = web.AppKey("auth_failures", Any)
# The thread every write goes through (node.writer).
WRITER = web.AppKey("writer", Any)
GUARD_LOOP_WRITES = web.AppKey("guard_loop_writes", bool)
# The authenticated token of a request: {"id", "name", "role"}.
TOKEN = web.RequestKey("token", dict[str, Any])
# The scheduled backups (node.backup.BackupSchedule), when `serve` runs them.
BACKUPS = web.AppKey("backups", Any)
