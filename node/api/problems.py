"""RFC 9457 problem+json responses and the middleware that makes every failure one."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    NotSaved,
    Unprocessable,
)

log = logging.getLogger("shopnode.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Malformed(Invalid):
    """The request could not be read at all (not JSON, not a UUID)."""


class TooSlow(DomainError):
    """The client took too long to send its request."""


# Each error as HTTP: its status, and its own title where the status's would not fit. The
# most specific class wins (Unprocessable before Invalid); DomainError is the fallback.
STATUSES: dict[type[DomainError], tuple[int, str | None]] = {
    DomainError: (400, None),
    Malformed: (400, "Malformed request"),
    Forbidden: (403, None),
    NotFound: (404, None),
    TooSlow: (408, None),
    Conflict: (409, None),
    Invalid: (422, None),
    Unprocessable: (422, "Unprocessable request"),
    NotSaved: (503, None),
}


def status_of(error: DomainError) -> tuple[int, str | None]:
    """The HTTP status of `error`, and its problem title if not the status's own."""
    return next(STATUSES[kind] for kind in type(error).__mro__ if kind in STATUSES)


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
    status, title = status_of(error)
    extra = dict(error.extra)
    if isinstance(error, Invalid) and error.errors:
        extra["errors"] = [{"field": f, "message": m} for f, m in error.errors]
    response = problem(status, error.detail, title, **extra)
    if status == 408:
        response.force_close()  # the rest of a slow body is not worth waiting for
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


def body_limit_text(limit: int) -> str:
    """'1 MiB' for 1048576: the 413 message names the limit the app really has."""
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    return f"{limit} bytes"


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
            413: "the request body is larger than the "
                 f"{body_limit_text(request.client_max_size)} limit",
        }.get(exc.status, exc.reason)
        response = problem(exc.status, detail)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except ConnectionResetError:
        # The client went away mid-request: nobody to answer, nothing to alarm anyone about.
        log.debug("client disconnected during %s %s", request.method, route_of(request))
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, route_of(request))
        return problem(500, "something went wrong on the server; it has been logged")


def route_of(request: web.BaseRequest) -> str:
    """The matched route's pattern (`/api/v1/customers/{id}`), never the path as sent:
    paths and queries may hold values that do not belong in a log."""
    try:
        resource = request.match_info.route.resource
    except (AttributeError, AssertionError):  # no match_info: the request was unreadable
        resource = None
    return resource.canonical if resource is not None else "(no route)"
