"""API bearer tokens: random secrets, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from node.clock import now_iso, uuid7
from node.db import database, execute, fetch_all, fetch_one
from node.errors import Conflict, NotFound
from node.models import ROLES

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
        if fetch_one("SELECT 1 FROM api_token WHERE name = ? AND revoked_at IS NULL", (name,)):
            raise Conflict(f"an active token named {name!r} already exists; revoke it first")
        execute(
            "INSERT INTO api_token(id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (uuid7(), name, role, _hash(secret), now_iso()),
        )
    return secret


def list_tokens() -> list[dict]:
    return fetch_all(
        "SELECT name, role, created_at, revoked_at FROM api_token ORDER BY created_at, id"
    )


def revoke_token(name: str) -> None:
    changed = execute(
        "UPDATE api_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        (now_iso(), name),
    )
    if not changed:
        raise NotFound(f"no active token named {name!r}")


def authenticate(secret: str) -> dict | None:
    """The active token's name and role for a presented secret, else None."""
    return fetch_one(
        "SELECT id, name, role FROM api_token WHERE token_hash = ? AND revoked_at IS NULL",
        (_hash(secret),),
    )


def has_tokens() -> bool:
    return fetch_one("SELECT 1 FROM api_token LIMIT 1") is not None
