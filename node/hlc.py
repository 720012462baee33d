"""Hybrid logical clock: wall-clock milliseconds plus a counter, persisted across restarts.

A timestamp is `WWWWWWWWWWWWWWW-CCCCCC-ORIGIN`; stamps are compared as parsed (wall, counter,
origin) values, never as text. Ties are impossible because the origin id is part of it, so
last-writer-wins picks the same winner on every node. Our clock never moves more than
MAX_DRIFT_MS ahead of our wall clock: a remote stamp beyond that is not folded in (it would
drag all our future stamps into the future), and an edit stamped beyond it waits until our
wall clock gets there (sync/merge.py).
"""

from __future__ import annotations

import re

from node import clock
from node.db import get_meta, set_meta

# A remote clock more than this far ahead of our wall clock is held back and reported.
MAX_DRIFT_MS = 5 * 60 * 1000
MAX_COUNTER = 999_999
_KEY = "hlc"


def encode(wall_ms: int, counter: int, origin: str) -> str:
    return f"{wall_ms:015d}-{counter:06d}-{origin}"


_STAMP = re.compile(r"(\d{15})-(\d{6})-(\S+)")


def decode(stamp: str) -> tuple[int, int, str]:
    """(wall ms, counter, origin) of a stamp; ValueError for anything else."""
    match = _STAMP.fullmatch(stamp) if isinstance(stamp, str) else None
    if match is None:
        raise ValueError(f"not a clock stamp: {stamp!r}")
    return int(match[1]), int(match[2]), match[3]


def ahead_ms(stamp: str) -> int:
    """How far a stamp is ahead of our wall clock (negative: behind)."""
    return decode(stamp)[0] - clock.wall_ms()


def too_far_ahead(stamp: str) -> bool:
    return ahead_ms(stamp) > MAX_DRIFT_MS


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
    return ticks(origin, 1, after)[0]


def ticks(origin: str, count: int, after: str | None = None) -> list[str]:
    """`count` new timestamps, as `count` calls of tick() would give them, with one read
    and one write of the stored clock (CSV import stamps thousands of changes at once)."""
    if count < 1:
        return []
    last_wall, last_counter = _last()
    wall = clock.wall_ms()
    if after is not None:
        after_wall, after_counter, _ = decode(after)
        if after_wall <= wall + MAX_DRIFT_MS:
            last_wall, last_counter = max((last_wall, last_counter), (after_wall, after_counter))
    stamps = []
    for _ in range(count):
        if wall > last_wall:
            last_wall, last_counter = wall, 0
        elif last_counter >= MAX_COUNTER:  # six digits: move the clock on a millisecond
            last_wall, last_counter = last_wall + 1, 0
        else:
            last_counter += 1
        stamps.append(encode(last_wall, last_counter, origin))
    set_meta(_KEY, stamps[-1])
    return stamps


def observe(remote: str, origin: str) -> bool:
    """Fold a remote timestamp into our clock; False if it was too far ahead to trust."""
    remote_wall, remote_counter, _ = decode(remote)
    if remote_wall > clock.wall_ms() + MAX_DRIFT_MS:
        return False
    last_wall, last_counter = _last()
    if (remote_wall, remote_counter) > (last_wall, last_counter):
        set_meta(_KEY, encode(remote_wall, remote_counter, origin))
    return True
