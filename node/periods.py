"""`from`/`to` query filters: dates or RFC 3339 times, both ends inclusive.

A date is the shop's calendar day (`[node] timezone`), from its local midnight to the next:
23 or 25 hours across a DST change."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from node.clock import day_start, iso
from node.errors import Invalid

# A date, or an RFC 3339 time (T or t, Z or z or an offset). Nothing else that
# datetime.fromisoformat would take (week dates, no seconds, a space for T): the document
# promises these two forms. Only the calendar (2025-02-30, year 0) is left to fromisoformat.
_DATE = "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?"
_ZONE = "[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]"
# The zone is optional here only to say what is missing.
_MOMENT = re.compile(f"{_DATE}(?:{_TIME}(?P<zone>{_ZONE})?)?")
# What the document says: empty (no bound), a date, or a time with its zone.
PATTERN = f"^(?:{_DATE}(?:{_TIME}(?:{_ZONE}))?)?$"
FORMS = "a date (2025-05-18) or an RFC 3339 time (2025-05-18T10:00:00Z)"


def _parse(field: str, text: str) -> date | datetime:
    """The shop's day a date names, or the UTC moment a time names."""
    form = _MOMENT.fullmatch(text)
    if form is None:
        raise Invalid([(field, f"must be {FORMS}")])
    if form["zone"] is None and len(text) > 10:
        raise Invalid([(field, "a time needs a zone, e.g. 2025-05-18T10:00:00Z")])
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
        return moment.astimezone(UTC)  # out-of-range offsets at the calendar's ends fail here
    except (ValueError, OverflowError):
        raise Invalid([(field, f"must be {FORMS}")]) from None


def _bound(moment: date | datetime, after: timedelta) -> str | None:
    """A day's start (`after` days later) or a moment (`after` later) as stored text; None
    past either end of the calendar (no bound)."""
    try:
        if isinstance(moment, datetime):
            return iso(moment + after)
        return iso(day_start(moment + after))
    except OverflowError:
        return None


def period(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """Bounds as stored-timestamp text: created_at >= lower AND created_at < upper."""
    lower = upper = None
    if start:
        lower = _bound(_parse("from", start), timedelta(0))
    if end:
        moment = _parse("to", end)
        # A date includes its whole day; a time includes its own millisecond.
        step = timedelta(milliseconds=1) if isinstance(moment, datetime) else timedelta(days=1)
        upper = _bound(moment, step)
    if lower and upper and lower >= upper:
        raise Invalid([("from", "must not be after 'to'")])
    return lower, upper


def period_filter(lower: str | None, upper: str | None) -> tuple[str, list[str]]:
    """SQL condition on created_at for bounds from period(): (condition, params)."""
    where, params = ["1 = 1"], []
    if lower:
        where.append("created_at >= ?")
        params.append(lower)
    if upper:
        where.append("created_at < ?")
        params.append(upper)
    return " AND ".join(where), params
