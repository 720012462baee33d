"""Checking request bodies field by field, collecting every error at once.

A schema maps each allowed field to a parser: a function that returns the clean value or
raises ValueError with a message for the user. Unknown fields are errors too, so a typo
like `emial` never silently drops data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from node.errors import Invalid, invalid
from node.ids import parse_uuid
from node.money import MAX_AMOUNT

Parser = Callable[[Any], Any]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")
_PHONE_CHARS = re.compile(r"[0-9+()\-.\s/]+")
# The 8-4-4-4-12 form in any case (OpenAPI's format: uuid); uuid.UUID alone would also take
# braces, a urn:uuid: prefix, no hyphens and underscores between digits.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def parse_body(
    body: Any, schema: dict[str, Parser], required: Iterable[str] = (), nonempty: bool = False
) -> dict[str, Any]:
    """Validate a JSON object against `schema`; raise Invalid listing every problem."""
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    if nonempty and not body:
        raise invalid("body", "must contain at least one field")
    errors: list[tuple[str, str]] = []
    clean: dict[str, Any] = {}
    for field in body:
        if field not in schema:
            errors.append((field, "unknown field"))
    for field in required:
        if body.get(field) is None:
            errors.append((field, "is required"))
    for field, parser in schema.items():
        if field not in body or (field in required and body[field] is None):
            continue
        try:
            clean[field] = parser(body[field])
        except ValueError as exc:
            errors.append((field, str(exc)))
    if errors:
        raise Invalid(errors)
    return clean


def nullable(parser: Parser) -> Parser:
    """Accept null (stored as None) besides what `parser` accepts."""

    def parse(value: Any) -> Any:
        return None if value is None else parser(value)

    return parse


def is_text(value: str) -> bool:
    """True when `value` is valid Unicode text: no lone surrogates (JSON's `\\ud800`, a
    file read with surrogateescape), which no database, log or CSV file can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_TEXT = "is not valid Unicode text (it holds a lone surrogate)"


def text(min_len: int = 0, max_len: int = 1000) -> Parser:
    """A string, trimmed; empty becomes None unless min_len > 0."""

    def parse(value: Any) -> str | None:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if not is_text(value):
            raise ValueError(NOT_TEXT)
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if len(value) < min_len:
            raise ValueError("must not be empty" if min_len == 1 else f"at least {min_len} chars")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value or None

    return parse


def email(value: Any) -> str | None:
    value = text(max_len=254)(value)
    if value is None:
        return None
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address like jane@example.com")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def phone(value: Any) -> str | None:
    """Keep a leading + and the digits: '+1 (234) 567-890' -> '+1234567890'."""
    value = text(max_len=40)(value)
    if value is None:
        return None
    if not _PHONE_CHARS.fullmatch(value) or value.count("+") > 1 or "+" in value.lstrip()[1:]:
        raise ValueError("must be a phone number: digits, spaces, + ( ) - . only")
    digits = re.sub(r"\D", "", value)
    if not 4 <= len(digits) <= 20:
        raise ValueError("must have between 4 and 20 digits")
    return ("+" if value.startswith("+") else "") + digits


def tags(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("must be a list of strings")
    if len(value) > 20:
        raise ValueError("at most 20 tags")
    clean: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError("every tag must be a non-empty string")
        if not is_text(tag):
            raise ValueError("every tag must be valid Unicode text (no lone surrogates)")
        tag = tag.strip()
        if len(tag) > 50:
            raise ValueError("every tag must be at most 50 characters")
        if tag not in clean:
            clean.append(tag)
    return clean


def integer(minimum: int = 0, maximum: int = MAX_AMOUNT) -> Parser:
    """A JSON integer (not a float, string or boolean) within bounds."""

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number (integer minor units, e.g. 10000)")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return parse


amount = integer(minimum=1)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError("must be one of: " + ", ".join(options))
        return value

    return parse


def canonical_uuid(value: Any) -> str | None:
    """The lower-case form of a UUID written 8-4-4-4-12 (any case), else None."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        return None
    return parse_uuid(value)


def uuid(value: Any) -> str:
    parsed = canonical_uuid(value)
    if parsed is None:
        raise ValueError("must be a UUID")
    return parsed
