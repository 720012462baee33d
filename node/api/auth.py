"""Bearer-token authentication and role checks."""

from __future__ import annotations

from aiohttp import web

from node import tokens
from node.api.keys import TOKEN
from node.api.problems import Handler, problem
from node.errors import Forbidden

PUBLIC = {"/api/v1/openapi.json", "/healthz"}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/v1 route needs a valid token, except the OpenAPI document."""
    if request.path in PUBLIC or not request.path.startswith("/api/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return problem(401, "send an API token: 'Authorization: Bearer TOKEN'")
    token = tokens.authenticate(secret.strip())
    if token is None:
        return problem(401, "this API token is not valid or has been revoked")
    request[TOKEN] = token
    return await handler(request)


def require_owner(request: web.Request, action: str) -> None:
    if request[TOKEN]["role"] != "owner":
        raise Forbidden(f"only an owner token may {action}")


def is_owner(request: web.Request) -> bool:
    return request[TOKEN]["role"] == "owner"
