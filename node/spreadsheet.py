"""CSV cells a spreadsheet shows as text and never runs as a formula (CSV injection).

OWASP's advice: a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
return gets a leading `'`, which spreadsheets read as "this is text". Numbers stay as they
are, so amounts like `-50.25` still add up.
"""

from __future__ import annotations

import re
from typing import Any

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def safe_cell(value: Any) -> Any:
    """`value` as it may go into a CSV cell: text that could be a formula gets a `'`."""
    if isinstance(value, str) and value.startswith(TRIGGERS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(row: list[Any] | dict[str, Any]) -> Any:
    """Every cell of a row (a list, or a dict as csv.DictWriter takes it) made safe."""
    if isinstance(row, dict):
        return {key: safe_cell(value) for key, value in row.items()}
    return [safe_cell(value) for value in row]


def unsafe_cell(value: str) -> str:
    """The text a safe_cell() came from: importing an export gives back the same values."""
    if value.startswith("'") and value[1:].startswith(TRIGGERS):
        return value[1:]
    return value
