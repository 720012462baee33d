"""`from`/`to` query filters: dates or RFC 3339 times, both ends inclusive."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from node.errors import Invalid
from node.ids import iso


def _parse(field: str, text: str) -> tuple[datetime, bool]:
    """A moment and whether the text was a whole date."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), True
        moment = datetime.fromisoformat(text.replace("z", "Z"))
        moment.astimezone(UTC)  # out-of-range offsets at the calendar's ends fail here
    except (ValueError, OverflowError):
        raise Invalid(
            [(field, "must be a date (2025-05-18) or an RFC 3339 time (2025-05-18T10:00:00Z)")]
        ) from None
    if moment.tzinfo is None:
        raise Invalid([(field, "a time needs a zone, e.g. 2025-05-18T10:00:00Z")])
    return moment.astimezone(UTC), False


def period(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """Bounds as stored-timestamp text: created_at >= lower AND created_at < upper."""
    lower = upper = None
    if start:
        lower = iso(_parse("from", start)[0])
    if end:
        moment, whole_day = _parse("to", end)
        # A date includes its whole day; a time includes its own millisecond.
        try:
            upper = iso(moment + (timedelta(days=1) if whole_day else timedelta(milliseconds=1)))
        except OverflowError:
            upper = None  # the end of the calendar: no upper bound
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
