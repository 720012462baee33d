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
from datetime import UTC, date, datetime, tzinfo

import tzlocal

# The RFC 9562 variant (0b10) in the top bits of a random hex digit.
_VARIANT = {digit: f"{0x8 | int(digit, 16) & 0x3:x}" for digit in "0123456789abcdef"}


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
        return self.uuid7s(1)[0]

    def uuid7s(self, count: int) -> list[str]:
        """`count` UUIDv7s, as `count` calls of uuid7() at this instant give them (CSV
        import makes two per row: one read of the time and of the randomness for all)."""
        with self._lock:
            now_ms = self.time_ns() // 1_000_000
            stamps = []
            for _ in range(count):
                ms = now_ms
                if ms <= self._last_ms:
                    ms = self._last_ms
                    self._counter += 1
                    if self._counter >= 1 << 12:  # 4096 ids in one ms: borrow the next one
                        ms += 1
                        self._counter = 0
                else:
                    self._counter = 0
                self._last_ms = ms
                stamps.append((ms, self._counter))
        # 62 random bits each: the first hex digit of the last 64 bits carries the variant.
        randomness = self.random_bytes(8 * count).hex()
        ids = []
        for i, (ms, counter) in enumerate(stamps):
            at, rand = f"{ms:012x}", randomness[16 * i : 16 * i + 16]
            ids.append(f"{at[:8]}-{at[8:]}-7{counter:03x}-{_VARIANT[rand[0]]}{rand[1:4]}-{rand[4:]}")
        return ids


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


def uuid7s(count: int) -> list[str]:
    return _clock.uuid7s(count)


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
