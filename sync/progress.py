"""Sync progress and status on a node, kept in its meta table: the highest of our sequences
central holds, the central cursor of the last page of others' changes applied, and central's
epoch for each."""

from __future__ import annotations

from typing import Any

from node.changes import origin_id
from node.clock import seconds_since
from node.db import fetch_all, fetch_one, get_meta

ACKED = "sync_push_acked"
CURSOR = "sync_pull_cursor"
CURSOR_ID = "sync_pull_cursor_id"  # the id of the change at the cursor
PULL_EPOCH = "sync_pull_epoch"
PUSH_EPOCH = "sync_push_epoch"


def queue_status() -> dict[str, Any]:
    """Push queue depth, age of the oldest unsent change, pull cursor, pending changes and
    sync reports."""
    origin = origin_id()
    acked = int(get_meta(ACKED) or 0)
    queue = fetch_one(
        "SELECT COUNT(*) AS n, MIN(recorded_at) AS oldest FROM change_log "
        "WHERE origin = ? AND origin_seq > ?",
        (origin, acked),
    )
    pending = fetch_one("SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM sync_pending")
    counts = fetch_all("SELECT kind, COUNT(*) AS n FROM sync_report GROUP BY kind")
    return {
        "origin": origin,
        "push_queue_depth": queue["n"],
        "oldest_unsent_age_seconds": seconds_since(queue["oldest"]),
        "push_acked_seq": acked,
        "pull_cursor": int(get_meta(CURSOR) or 0),
        "pull_epoch": get_meta(PULL_EPOCH),
        "pending": pending["n"],
        "oldest_pending_age_seconds": seconds_since(pending["oldest"]),
        "reports": {r["kind"]: r["n"] for r in counts},
        "recent_reports": fetch_all(
            "SELECT kind, change_id, detail, created_at FROM sync_report ORDER BY id DESC LIMIT 20"
        ),
    }
