"""Ids as clients send them (the node makes its own with node/clock.py's uuid7)."""

from __future__ import annotations

import uuid


def parse_uuid(text: str) -> str | None:
    """The canonical lower-case form of a UUID string, or None when it is not one."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, AttributeError, TypeError):
        return None
