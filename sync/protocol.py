"""The /sync/v1 wire protocol, shared by the worker (node side) and the central node.

push  POST /sync/v1/push   {"origin": ORIGIN, "changes": [CHANGE, ...]}  (sequence order)
      -> {"acked_seq": N, "conflicts": [change id, ...], "reused": [change id, ...]}
      N is the highest contiguous sequence central holds for ORIGIN; `conflicts` are ids
      central holds with another body (quarantined); `reused` are changes whose sequence
      central holds under another id (the sender was restored from an old backup).
pull  GET  /sync/v1/pull?after=CURSOR&after_id=ID&limit=N&origin=ORIGIN
      -> {"changes": [CHANGE + "cursor", ...], "next": CURSOR, "next_id": ID, "more": bool,
          "high": CURSOR, "reset": bool}
      Changes of every origin but ORIGIN, in central commit order. `reset`: the cursor
      no longer points at the change it named (central restored): start again from 0.

CHANGE = {"id", "origin", "origin_seq", "hlc", "kind", "entity_id", "body", "recorded_at"},
with `body` the origin's exact JSON text, so "same change" is a byte comparison.
Bodies may be gzip-compressed (Content-Encoding: gzip) both ways.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from node.changes import check_body

PUSH_PATH = "/sync/v1/push"
PULL_PATH = "/sync/v1/pull"
STATUS_PATH = "/sync/v1/status"

# A batch stops at whichever comes first.
MAX_BATCH_CHANGES = 500
MAX_BATCH_BYTES = 1024 * 1024
MAX_PULL_LIMIT = 1000

CHANGE_FIELDS = ("id", "origin", "origin_seq", "hlc", "kind", "entity_id", "body", "recorded_at")


class ProtocolError(ValueError):
    """A malformed sync message."""


def gzip_json(payload: Any) -> bytes:
    return gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), compresslevel=5)


def check_change(change: Any) -> dict[str, Any]:
    """A change with exactly the expected fields and types, or ProtocolError."""
    if not isinstance(change, dict) or set(change) - {"cursor"} != set(CHANGE_FIELDS):
        raise ProtocolError(f"a change needs exactly the fields {', '.join(CHANGE_FIELDS)}")
    if not isinstance(change["origin_seq"], int) or isinstance(change["origin_seq"], bool):
        raise ProtocolError("origin_seq must be an integer")
    if change["origin_seq"] < 1:
        raise ProtocolError("origin_seq starts at 1")
    for field in CHANGE_FIELDS:
        if field != "origin_seq" and not isinstance(change[field], str):
            raise ProtocolError(f"{field} must be a string")
    try:
        check_body(json.loads(change["body"]))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError(f"change {change['id']}: {exc}") from None
    return {field: change[field] for field in CHANGE_FIELDS}


def batches(changes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split changes into batches bounded by count and bytes."""
    result: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for change in changes:
        weight = len(change["body"]) + 200
        if current and (len(current) >= MAX_BATCH_CHANGES or size + weight > MAX_BATCH_BYTES):
            result.append(current)
            current, size = [], 0
        current.append(change)
        size += weight
    if current:
        result.append(current)
    return result
