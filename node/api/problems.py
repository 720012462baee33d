"""RFC 9457 problem+json responses and the middleware that makes every failure one."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node.errors import DomainError, Invalid

log = logging.getLogger("shopnode.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation failed",
    500: "Internal server error",
}


def problem(status: int, detail: str, title: str | None = None, **extra: Any) -> web.Response:
    body = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="shopnode"'
    return response


def from_domain(error: DomainError) -> web.Response:
    extra = dict(error.extra)
    if isinstance(error, Invalid):
        extra["errors"] = [{"field": f, "message": m} for f, m in error.errors]
    return problem(error.status, error.detail, error.title, **extra)


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into problem+json: no HTML, no text, no stack trace."""
    try:
        return await handler(request)
    except DomainError as error:
        return from_domain(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = {
            404: f"no route for {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is larger than the 1 MiB limit",
        }.get(exc.status, exc.reason)
        response = problem(exc.status, detail)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return problem(500, "something went wrong on the server; it has been logged")
