"""The events feed: the node's change log in commit order, for the bot and integrations.

A position in the feed is the change log row's rowid. SQLite lets one write transaction
run at a time and gives each new row the next rowid, so rowids follow commit order: a
reader that has seen everything up to a cursor never misses a row committed later
(unlike `recorded_at` or `origin_seq`, which follow the clock or the origin). The log is
append-only, so no rowid is reused. Facts recorded here, by the bot through the API, and
arriving by sync all appear, each once.

A restored backup's log ends below where the feed had got to, and SQLite would number the
rows recorded after the restore from there: a reader past that point would miss them. So
`shopnode restore` sets `meta.events_cursor_base` (cursor = rowid + base) to carry the
feed on from the old head. Rows the backup held move up with it: a reader behind the old
head may see some of them again (their ids tell), none is missed.
"""

from __future__ import annotations

import json
from typing import Any

from node.changes import scrub_body
from node.db import fetch_all, fetch_one, get_meta

BASE = "events_cursor_base"  # meta key: what a cursor adds to the change log's rowid

# Each change with its cursor (the parameter: base()), and whether its customer is
# tombstoned.
SELECT = (
    "SELECT l.rowid + ? AS cursor, l.id, l.origin, l.origin_seq, l.kind, l.entity_id, l.body, "
    "l.recorded_at, t.customer_id IS NOT NULL AS gone FROM change_log l "
    "LEFT JOIN tombstone t ON t.customer_id = l.entity_id"
)


def base() -> int:
    return int(get_meta(BASE) or 0)


def head() -> int:
    """The cursor of the newest event (the base when there is none)."""
    return base() + fetch_one("SELECT COALESCE(MAX(rowid), 0) AS n FROM change_log")["n"]


def events_after(after: int, limit: int) -> dict[str, Any]:
    """Up to `limit` events after the cursor `after`, oldest first, and the next cursor.

    A customer deleted or anonymized is scrubbed in the stored log already; the feed blanks
    their personal fields again as it reads, so no copy can slip through."""
    shift = base()
    rows = fetch_all(f"{SELECT} WHERE l.rowid > ? ORDER BY l.rowid LIMIT ?",
                     (shift, after - shift, limit))  # fmt: skip
    events = [event(row) for row in rows]
    return {
        "events": events,
        "next_cursor": events[-1]["cursor"] if events else after,
        "head": head(),
    }


def event(row: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(row["body"])
    if row["gone"]:
        body = scrub_body(row["kind"], body)
    return {
        "cursor": row["cursor"],
        "id": row["id"],
        "kind": row["kind"],
        "entity_id": row["entity_id"],
        "origin": row["origin"],
        "origin_seq": row["origin_seq"],
        "recorded_at": row["recorded_at"],
        "body": body,
    }


def change_at(change_id: str) -> dict[str, Any] | None:
    """One event by its change id (None if this node does not hold it)."""
    row = fetch_one(f"{SELECT} WHERE l.id = ?", (base(), change_id))
    return event(row) if row else None
