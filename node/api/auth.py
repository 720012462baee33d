"""Bearer-token authentication, role checks, and a brake on guessing tokens."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from aiohttp import web

from node import tokens
from node.api.keys import AUTH_FAILURES, TOKEN
from node.api.problems import Handler, problem
from node.errors import Forbidden

PUBLIC = {"/api/v1/openapi.json", "/healthz"}
# An integration token (a POS plug-in, a standalone bot's feed) reads the events feed only.
INTEGRATION_PATHS = {"/api/v1/events"}
# Outside /api/, these need a token too (node.metrics checks the role).
GUARDED = {"/metrics"}

# Tokens hold 256 random bits, so guessing is hopeless; the brake only keeps the noise cheap.
# 60: schemathesis' ignored_auth check (tests/node/test_fuzz.py) sends about 3 bad tokens
# per operation, and with the events feed and the bot's Telegram routes that passed 20 a
# minute.
MAX_FAILURES = 60
WINDOW_SECONDS = 60.0


class FailedAuth:
    """Failed authentications per client address within the last WINDOW_SECONDS."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self.failures.get(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        if address not in self.failures:  # every request asks: most never failed
            return 0
        now = time.monotonic()
        times = self._recent(address, now)
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[0] + self.window - now))

    def record(self, address: str) -> None:
        now = time.monotonic()
        if len(self.failures) > 10_000:  # many addresses: forget the quiet ones
            self.failures = {a: t for a, t in self.failures.items() if self._recent(a, now)}
        times = self._recent(address, now)
        times.append(now)
        self.failures[address] = times


def present_secret(header: str) -> str | None:
    """The token of an 'Authorization: Bearer TOKEN' header, if it can be one at all."""
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return None
    # Headers arrive as bytes; anything but printable ASCII is no token of ours.
    if not (secret.isascii() and secret.isprintable()):
        return ""
    return secret


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/v1 route needs a valid token, except the OpenAPI document; so does /metrics."""
    guarded = request.path.startswith("/api/") or request.path in GUARDED
    if request.path in PUBLIC or not guarded:
        return await handler(request)
    failures = request.app[AUTH_FAILURES]
    address = request.remote or "unknown"
    wait = failures.retry_after(address)
    if wait:
        response = problem(429, f"too many failed authentications; try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    secret = present_secret(request.headers.get("Authorization", ""))
    if secret is None:
        return problem(401, "send an API token: 'Authorization: Bearer TOKEN'")
    token = tokens.authenticate(secret) if secret else None
    if token is None:
        failures.record(address)
        return problem(401, "this API token is not valid or has been revoked")
    if token["role"] == "integration" and request.path not in INTEGRATION_PATHS:
        return problem(403, "an integration token may only read /api/v1/events")
    request[TOKEN] = token
    return await handler(request)


def require_owner(request: web.Request, action: str) -> None:
    if request[TOKEN]["role"] != "owner":
        raise Forbidden(f"only an owner token may {action}")


def require_role(request: web.Request, roles: tuple[str, ...], action: str) -> None:
    if request[TOKEN]["role"] not in roles:
        raise Forbidden(f"only {' or '.join(roles)} tokens may {action}")


def credit_limit_override(request: web.Request, fields: dict[str, Any]) -> bool:
    """Whether a body's `override_credit_limit` asks to go past a limit (owners only)."""
    if fields.get("override_credit_limit"):
        require_owner(request, "override a credit limit")
        return True
    return False


def is_owner(request: web.Request) -> bool:
    return request[TOKEN]["role"] == "owner"
