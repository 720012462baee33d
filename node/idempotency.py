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
from datetime import datetime, timedelta
from typing import Any

from node.clock import iso, now
from node.db import database, execute, fetch_one
from node.errors import Unprocessable, invalid

KEEP_FOR = timedelta(hours=48)  # promised: at least 24 hours
MAX_KEY_LENGTH = 255
# Keys past KEEP_FOR go at most once a minute, with the write that comes then: not a
# statement on every request for rows that expire by the minute anyway.
EXPIRE_EVERY_MS = 60_000
_expired_at_ms = 0  # when they last went, by the node's clock


UNPARSED = object()


def fingerprint(method: str, path: str, body: bytes, parsed: Any = UNPARSED) -> str:
    """What makes two requests "the same": method, path and the JSON body's meaning.
    `parsed`: the body as already parsed, if it was (an empty body is taken as its text)."""
    try:
        value = json.loads(body) if parsed is UNPARSED or not body.strip() else parsed
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
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
) -> tuple[int, str, bool]:
    """Run `write` once per (client, key): (status, the body as JSON text, replayed): the
    first answer's, byte for byte, on a replay. Call it inside a
    transaction that an exception rolls back (node.writer.write runs each write in one), so
    the key and the write are stored together or not at all."""
    # Every money request: hand-written SQL (bench/money.py, node/db.py).
    if not database.in_transaction():
        raise RuntimeError("run_once outside a transaction: the key and write would part")
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
        return seen["status"], seen["body"], True
    status, body = write()
    text = json.dumps(body)
    moment = now()
    execute(
        "INSERT INTO idempotency_key(scope, key, request_hash, status, body, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (scope, key, request_hash, status, text, iso(moment)),
    )
    expire(moment)
    return status, text, False


def expire(moment: datetime) -> None:
    """Forget the keys older than KEEP_FOR, unless that was done less than a minute ago (or
    the clock has since gone back: a test's clock, a corrected system clock)."""
    global _expired_at_ms
    ms = int(moment.timestamp() * 1000)
    if _expired_at_ms <= ms < _expired_at_ms + EXPIRE_EVERY_MS:
        return
    execute("DELETE FROM idempotency_key WHERE created_at < ?", (iso(moment - KEEP_FOR),))
    _expired_at_ms = ms
