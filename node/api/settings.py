"""Settings routes: the vendor's earn rate, point value, default credit limit and currency."""

from __future__ import annotations

from aiohttp import web

from node import settings
from node import validation as v
from node.api.auth import require_owner
from node.api.params import json_response, read_json
from node.writer import write

routes = web.RouteTableDef()

SETTINGS_INPUT = v.Body("SettingsInput", settings.FIELDS, nonempty=True,
                        description="any of the settings, at least one")  # fmt: skip


@routes.get("/api/v1/settings")
async def get_settings(request: web.Request) -> web.Response:
    """Vendor settings."""
    return json_response(settings.get_settings())


@routes.patch("/api/v1/settings")
async def patch_settings(request: web.Request) -> web.Response:
    """Change vendor settings (owners only); applies from now on."""
    require_owner(request, "change settings")
    fields = SETTINGS_INPUT.parse(await read_json(request))
    return json_response(await write(lambda: settings.update_settings(fields)))
