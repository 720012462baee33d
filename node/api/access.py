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

from node.api.problems import Handler, route_of

SERVER_NAME = "shopnode"
REQUEST_ID = web.RequestKey("request_id", str)
# A client may pass its own id through, if it is a plain token that cannot forge log lines.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, route pattern, status, duration, request id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        request_id = response.headers.get("X-Request-Id", "-")
        self.logger.info(
            "%s %s %s %.1fms id=%s",
            request.method if request.method.isalpha() else "-",
            route_of(request),
            response.status,
            time * 1000,
            request_id,
        )


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's X-Request-Id if it is a plain token)."""
    offered = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex
    return await handler(request)


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
