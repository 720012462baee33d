"""The node's one clock: wall time, RFC 3339 stamps, time-ordered UUIDv7 ids and the shop's day.

Every module that reads the time or makes an id asks the clock in use (`now()`, `uuid7()`
and the rest below). Instants are stored in UTC; every calendar day the node shows or takes
(receipt numbers, date-only filters, ageing) is a day in the clock's `zone`, the shop's
`[node] timezone`. A process runs on the system `Clock`; a test or the simulation builds
its own (`create_app(config, clock=...)` or `use_clock()`) instead of patching modules.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, date, datetime, tzinfo

import tzlocal


class Clock:
    """Wall time and id randomness from the system; a subclass may replace `time_ns` and
    `random_bytes` (a virtual clock, seeded ids). UUIDv7s are monotonic per clock."""

    def __init__(self, zone: tzinfo | None = None) -> None:
        # The shop's day; create_app sets the configured one.
        self.zone = zone or machine_zone()
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def time_ns(self) -> int:
        return time.time_ns()

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def wall_ms(self) -> int:
        return self.time_ns() // 1_000_000

    def now(self) -> datetime:
        ns = self.time_ns()
        return datetime.fromtimestamp(ns // 10**9, UTC).replace(microsecond=ns // 1000 % 10**6)

    def today(self) -> date:
        """The shop's calendar day now."""
        return self.now().astimezone(self.zone).date()

    def uuid7(self) -> str:
        """A UUIDv7 (RFC 9562) string; monotonic even within one millisecond."""
        with self._lock:
            ms = self.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter >= 1 << 12:  # 4096 ids in one ms: borrow the next millisecond
                    ms += 1
                    self._counter = 0
            else:
                self._counter = 0
            self._last_ms = ms
            rand_a = self._counter
        rand_b = int.from_bytes(self.random_bytes(8), "big") & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
        return str(uuid.UUID(int=value))


def machine_zone() -> tzinfo:
    """This machine's zone (TZ, else /etc/localtime), DST rules included: the default shop day.
    A fixed offset (datetime.now().astimezone()) would be an hour off half the year."""
    return tzlocal.get_localzone()


_clock = Clock()


def use_clock(clock: Clock) -> Clock:
    """Make `clock` the one every node module reads; returns the one it replaces."""
    global _clock
    previous, _clock = _clock, clock
    return previous


def current_clock() -> Clock:
    return _clock


def now() -> datetime:
    return _clock.now()


def wall_ms() -> int:
    return _clock.wall_ms()


def uuid7() -> str:
    return _clock.uuid7()


def today() -> date:
    return _clock.today()


def shop_day(stamp: str) -> date:
    """The shop's calendar day of a stored RFC 3339 instant."""
    return datetime.fromisoformat(stamp).astimezone(_clock.zone).date()


def day_start(day: date) -> datetime:
    """The instant the shop's `day` begins: its local midnight (or, where a DST change skips
    midnight, the moment the day's first hour starts). OverflowError past the calendar's
    ends."""
    return datetime(day.year, day.month, day.day, tzinfo=_clock.zone).astimezone(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a Z: sorts as text in time order."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso(now())


def seconds_since(moment: str | None) -> float | None:
    """Seconds from an RFC 3339 time to now (never below 0); None when there was no such
    time."""
    if not moment:
        return None
    then = datetime.fromisoformat(moment)
    return round(max(0.0, (now() - then).total_seconds()), 1)
