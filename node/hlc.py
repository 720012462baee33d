"""Hybrid logical clock: wall-clock milliseconds plus a counter, persisted across restarts.

A timestamp is text that sorts in clock order: `WWWWWWWWWWWWWWW-CCCCCC-ORIGIN`. Ties are
impossible because the origin id is part of it, so last-writer-wins picks the same winner on
every node. A remote clock far ahead of ours is not folded into our clock (it would drag all
our future timestamps into the future); the caller reports it instead.
"""

from __future__ import annotations

import time

from node.db import get_meta, set_meta

# A remote clock more than this far ahead of our wall clock is held back and reported.
MAX_DRIFT_MS = 5 * 60 * 1000
_KEY = "hlc"


def encode(wall_ms: int, counter: int, origin: str) -> str:
    return f"{wall_ms:015d}-{counter:06d}-{origin}"


def decode(stamp: str) -> tuple[int, int, str]:
    wall, counter, origin = stamp.split("-", 2)
    return int(wall), int(counter), origin


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _last() -> tuple[int, int]:
    stored = get_meta(_KEY)
    if stored is None:
        return 0, 0
    wall, counter, _ = decode(stored)
    return wall, counter


def tick(origin: str, after: str | None = None) -> str:
    """A new timestamp for a local change (call inside the change's transaction), later
    than `after` too: an edit must win over the values it replaces, even ones stamped by a
    clock running ahead (that clock is held back from ours, not from the values)."""
    last_wall, last_counter = _last()
    if after is not None:
        after_wall, after_counter, _ = decode(after)
        last_wall, last_counter = max((last_wall, last_counter), (after_wall, after_counter))
    wall = _wall_ms()
    if wall > last_wall:
        stamp = encode(wall, 0, origin)
    else:
        stamp = encode(last_wall, last_counter + 1, origin)
    set_meta(_KEY, stamp)
    return stamp


def observe(remote: str, origin: str) -> bool:
    """Fold a remote timestamp into our clock; False if it was too far ahead to trust."""
    remote_wall, remote_counter, _ = decode(remote)
    now = _wall_ms()
    if remote_wall > now + MAX_DRIFT_MS:
        return False
    last_wall, last_counter = _last()
    if (remote_wall, remote_counter) > (last_wall, last_counter):
        set_meta(_KEY, encode(remote_wall, remote_counter, origin))
    return True
