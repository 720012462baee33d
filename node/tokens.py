"""API bearer tokens: random secrets, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

import peewee

from node.clock import now_iso, uuid7
from node.db import database, run
from node.errors import Conflict, NotFound
from node.models import ROLES, ApiToken

TOKEN_PREFIX = "sn_"


def _hash(secret: str) -> str:
    # The secret has 256 random bits, so a fast hash is safe: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(name: str, role: str = "owner") -> str:
    """Store a new token and return its secret; the secret is never stored or shown again."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with database.atomic():
        if ApiToken.select().where(_active_named(name)).exists():
            raise Conflict(f"an active token named {name!r} already exists; revoke it first")
        ApiToken.insert(id=uuid7(), name=name, role=role, token_hash=_hash(secret),
                        created_at=now_iso()).execute()  # fmt: skip
    return secret


def _active_named(name: str) -> peewee.Expression:
    # At most one (the api_token_active_name index): a name is reused once revoked.
    return (ApiToken.name == name) & ApiToken.revoked_at.is_null()


def list_tokens() -> list[dict]:
    columns = (ApiToken.name, ApiToken.role, ApiToken.created_at, ApiToken.revoked_at)
    return list(ApiToken.select(*columns).order_by(ApiToken.created_at, ApiToken.id).dicts())


def revoke_token(name: str) -> None:
    changed = ApiToken.update(revoked_at=now_iso()).where(_active_named(name)).execute()
    if not changed:
        raise NotFound(f"no active token named {name!r}")


AUTHENTICATED = ("id", "name", "role")
_AUTHENTICATE = (f"SELECT {', '.join(AUTHENTICATED)} FROM api_token "
                 "WHERE token_hash = ? AND revoked_at IS NULL")  # fmt: skip


def authenticate(secret: str) -> dict | None:
    """The active token's name and role for a presented secret, else None."""
    # Every request runs this: hand-written SQL straight on the thread's connection
    # (bench/run.py's GET by id, bench/money.py; node/db.py).
    row = run(_AUTHENTICATE, (_hash(secret),)).fetchone()
    return None if row is None else dict(zip(AUTHENTICATED, row, strict=True))


def has_tokens() -> bool:
    return ApiToken.select().exists()
