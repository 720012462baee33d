"""The listening socket: slow and hostile clients are cut off, so the shop keeps being served.

aiohttp's defaults suit a server behind a proxy; a shop node faces clients directly. Here:
a deadline for a request's headers (the keep-alive timer, which aiohttp also runs before
the first request), a short linger after an unread body, a cap on open connections below
the process's file-descriptor limit, and problem+json for requests that are not even HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import uuid
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from node.api.access import SERVER_NAME, AccessLogger
from node.api.problems import problem

log = logging.getLogger("shopnode.server")

# A client has this long to send a request's headers, and an idle keep-alive connection
# is closed after it too (aiohttp starts this timer when the connection opens).
HEADER_TIMEOUT = 10.0
# After answering a request whose body was not read, wait this long for it to drain.
LINGER = 2.0
# File descriptors kept free for the database, the bot, sync and logs.
RESERVED_FDS = 64
# asyncio accepts up to `backlog` connections in one go before any closed one gives its
# descriptor back, so that many are kept free as well.
BACKLOG = 32
MAX_CONNECTIONS = 1000


def connection_limit(requested: int = MAX_CONNECTIONS) -> int:
    """At most `requested`, and always below the process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(8, min(requested, soft - RESERVED_FDS - BACKLOG))


class ProblemHandler(RequestHandler):
    """aiohttp's connection handler, answering unreadable requests with problem+json."""

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body that broke after it was answered (bad gzip) is the client's problem."""
        if isinstance(kw.get("exc_info"), web.RequestPayloadError | ConnectionError):
            log.debug("request body unreadable after the answer: %s", type(kw["exc_info"]))
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request line or header the parser rejected: no echo of it, no version banner."""
        if isinstance(exc, ConnectionError):
            # The client went away (problems_middleware logged it at debug): nobody to
            # answer; aiohttp drops the connection quietly on this error.
            raise ConnectionError("client disconnected") from None
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        if status >= 500:
            log.error("unexpected error reading a request: %s", type(exc).__name__)
        else:
            # Scanners and broken clients: noise, and the rejected bytes may hold anything.
            log.debug("unreadable request (%s): %s", status, type(exc).__name__)
        try:
            phrase = HTTPStatus(status).description
        except ValueError:
            phrase = "the request could not be read"
        response = problem(status, f"this is not a request the server can read: {phrase}")
        response.headers["Server"] = SERVER_NAME
        response.headers["X-Request-Id"] = uuid.uuid4().hex
        response.force_close()
        return response


class ConnectionGuard:
    """The protocol factory: one handler per connection, never more than `limit` open.

    At the limit the oldest connections are closed to make room: under a flood of idle or
    slow connections those are the attackers' and a new client is likely a real one.
    """

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit

    def __call__(self) -> RequestHandler:
        open_now = [h for h in self.server.connections if h.transport is not None]
        if len(open_now) >= self.limit:
            # Make room for a whole accept burst at once: descriptors come back only after
            # the loop runs the closes, and asyncio may accept BACKLOG more before that.
            for oldest in open_now[: len(open_now) - self.limit + BACKLOG]:
                oldest.force_close()
        return ProblemHandler(
            self.server,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=HEADER_TIMEOUT,
            lingering_time=LINGER,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("aiohttp.access"),
        )


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through a ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG)
        self.max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        assert self._runner.server is not None
        guard = ConnectionGuard(self._runner.server, self.max_connections)
        self._server = await loop.create_server(guard, self._host, self._port,
                                                backlog=self._backlog)  # fmt: skip

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]
