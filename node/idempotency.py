"""Idempotency keys: a retried money write returns the first response and changes nothing.

The key, the request's fingerprint and the response are stored in the same transaction as
the write itself, so a crash can never leave a write without its key or a key without its
write. A failed request stores nothing: it changed nothing, so a retry is evaluated afresh.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from node.clock import iso, now, now_iso
from node.db import database, execute, fetch_one
from node.errors import Unprocessable, invalid

KEEP_FOR = timedelta(hours=48)  # promised: at least 24 hours
MAX_KEY_LENGTH = 255


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and the JSON body's meaning."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


# Printable ASCII, not only spaces: a key is a token the client made up (a UUID, say), and
# HTTP carries other characters only as bytes each side may decode differently.
KEY = re.compile(r"[ -~]*[!-~][ -~]*")


def check_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not KEY.fullmatch(key):
        raise invalid(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def run_once(
    scope: str, key: str, request_hash: str, write: Callable[[], tuple[int, Any]]
) -> tuple[int, Any, bool]:
    """Run `write` once per (client, key): (status, body, replayed)."""
    # Every money request: hand-written SQL (bench/money.py, node/db.py).
    with database.atomic():
        seen = fetch_one(
            "SELECT request_hash, status, body FROM idempotency_key WHERE scope = ? AND key = ?",
            (scope, key),
        )
        if seen is not None:
            if seen["request_hash"] != request_hash:
                raise Unprocessable(
                    "this Idempotency-Key was already used with a different request; "
                    "use a new key for a new request"
                )
            return seen["status"], json.loads(seen["body"]), True
        status, body = write()
        execute(
            "INSERT INTO idempotency_key(scope, key, request_hash, status, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (scope, key, request_hash, status, json.dumps(body), now_iso()),
        )
        execute("DELETE FROM idempotency_key WHERE created_at < ?", (iso(now() - KEEP_FOR),))
    return status, body, False
