"""Access log and request ids: what happened, never to whom.

A line names the method, the route pattern (`/api/v1/customers/{id}`), the status, the
duration and the request id. Never the query string, a body, a header or a path's values:
searches carry phone numbers and emails, and a careless client may put a token in a URL.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from node import logs
from node.api.problems import Handler, route_of

SERVER_NAME = "shopnode"
REQUEST_ID = web.RequestKey("request_id", str)
# A client may pass its own id through, if it is a plain token that cannot forge log lines
# and cannot be a phone number (it has a letter) or one of our tokens (they hold a '_').
_CLIENT_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9.-]{8,64}")


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, route pattern, status, duration, request id (as text,
    and as fields for JSON logs: node.logs)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        method = request.method if request.method.isalpha() else "-"
        route, duration_ms = route_of(request), round(time * 1000, 1)
        fields = {"request_id": response.headers.get("X-Request-Id", "-"), "method": method,
                  "route": route, "status": response.status, "duration_ms": duration_ms}
        self.logger.info("%s %s %s %.1fms", method, route, response.status, duration_ms,
                         extra=fields)  # fmt: skip


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's X-Request-Id if it is a plain token), which
    every line logged while it is handled carries."""
    offered = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex
    handling = logs.REQUEST_ID.set(request[REQUEST_ID])
    try:
        return await handler(request)
    finally:
        logs.REQUEST_ID.reset(handling)


async def stamp_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the request id on every response, and no version banner."""
    response.headers["Server"] = SERVER_NAME
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id


def install(app: web.Application) -> None:
    """Request ids and response stamps for an app (the node's or central's)."""
    app.middlewares.insert(0, request_id_middleware)
    app.on_response_prepare.append(stamp_response)
