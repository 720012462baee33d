"""Access log and request ids: what happened, never to whom.

A line names the method, the route pattern (`/api/v1/customers/{id}`), the status, the
duration and the request id. Never the query string, a body, a header or a path's values:
searches carry phone numbers and emails, and a careless client may put a token in a URL.
"""

from __future__ import annotations

import logging
import os
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from node import logs
from node.api.problems import Handler, route_of

SERVER_NAME = "shopnode"
REQUEST_ID = web.RequestKey("request_id", str)
# A client may pass its own id through, if it is a plain token that cannot forge log lines
# and cannot be a phone number (it has a letter) or one of our tokens (they hold a '_').
_CLIENT_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9.-]{8,64}")
ACCESS_LINE = "%s %s %s %.1fms"
# A random (version 4) UUID's bits: 122 random, then its version and variant set.
_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


def new_request_id() -> str:
    """A random UUID in hex, as uuid.uuid4().hex writes it, without building a UUID."""
    bits = int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET
    return f"{bits:032x}"


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, route pattern, status, duration, request id (as text,
    and as fields for JSON logs: node.logs)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        method = request.method if request.method.isalpha() else "-"
        route, duration_ms = route_of(request), round(time * 1000, 1)
        fields = {"request_id": response.headers.get("X-Request-Id", "-"), "method": method,
                  "route": route, "status": response.status, "duration_ms": duration_ms}
        # The record made here, not by logger.info(): that one searches the stack for the
        # caller's file and line, which no log format shows, and this runs every request.
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, ACCESS_LINE,
                                   (method, route, response.status, duration_ms), None,
                                   extra=fields)  # fmt: skip
        logger.handle(record)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (the client's X-Request-Id if it is a plain token), which
    every line logged while it is handled carries."""
    offered = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = offered if _CLIENT_ID.fullmatch(offered) else new_request_id()
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
