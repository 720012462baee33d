"""Request values declared once: each field knows how it is read and what the document says.

A `Field` pairs a parser (returns the clean value or raises ValueError with a message for
the user) with the JSON Schema of what it accepts; both are built from the same arguments
(`text(max_len=500)` is the trimming parser and the pattern that says "at most 500
characters once trimmed"). A `Body` is a request body made of fields: it validates a JSON
object, collecting every error at once, and is the OpenAPI component of that body. Unknown
fields are errors too, so a typo like `emial` never silently drops data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from node.errors import Invalid, invalid
from node.money import MAX_AMOUNT

Parser = Callable[[Any], Any]
Schema = dict[str, Any]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")
_PHONE_CHARS = re.compile(r"[0-9+()\-.\s/]+")
_NOT_DIGIT = re.compile(r"\D")
# The 8-4-4-4-12 form in any case (OpenAPI's format: uuid); uuid.UUID alone would also take
# braces, a urn:uuid: prefix, no hyphens and underscores between digits.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Text is trimmed before it is checked, so the documents' patterns let surrounding
# whitespace through: Python's str.isspace (what str.strip and a regex's \s take), spelled
# out so that the class means the same in ECMA-262 and Python regexes.
WS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@dataclass(frozen=True)
class Field:
    """One request value: how it is read (`parse`) and what the document says of it."""

    parse: Parser
    schema: Schema

    def __call__(self, value: Any) -> Any:
        return self.parse(value)

    def describe(self, text: str) -> Field:
        """The same field, its description extended with `text` (who may set it, ...)."""
        known = self.schema.get("description")
        return dataclasses.replace(
            self, schema={**self.schema, "description": f"{known}; {text}" if known else text}
        )


@dataclass(frozen=True)
class Body:
    """A JSON request body: its fields, which are required, and its OpenAPI component name.

    `nonempty`: at least one field (a partial update). `optional`: no body, or null, is the
    same as `{}`."""

    name: str
    fields: dict[str, Field]
    required: tuple[str, ...] = ()
    nonempty: bool = False
    optional: bool = False
    description: str = ""

    def parse(self, body: Any) -> dict[str, Any]:
        """The clean fields of `body`; Invalid listing every problem."""
        if body is None and self.optional:
            body = {}
        return parse_body(body, self.fields, self.required, self.nonempty)

    def schema(self) -> Schema:
        """The body's object as a JSON Schema (its OpenAPI component); that an optional body
        may also be null or absent is the operation's to say (node.api.openapi.body)."""
        schema: Schema = {
            "type": "object",
            "properties": {name: field.schema for name, field in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.nonempty:
            schema["minProperties"] = 1
        if self.description:
            schema["description"] = self.description
        return schema


def parse_body(
    body: Any, schema: dict[str, Field], required: Iterable[str] = (), nonempty: bool = False
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


def nullable(field: Field) -> Field:
    """Accept null (stored as None) besides what `field` accepts."""

    def parse(value: Any) -> Any:
        return None if value is None else field.parse(value)

    kind = field.schema["type"]
    kinds = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    return Field(parse, {**field.schema, "type": kinds})


def is_text(value: str) -> bool:
    """True when `value` is valid Unicode text: no lone surrogates (JSON's `\\ud800`, a
    file read with surrogateescape), which no database, log or CSV file can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_TEXT = "is not valid Unicode text (it holds a lone surrogate)"


def trimmed_pattern(max_len: int, required: bool = False) -> str:
    """A pattern for a string that is at most `max_len` (>= 2) characters once trimmed, with
    no NUL character; empty (or only whitespace) passes unless `required`."""
    edge = f"[^{WS}\\x00]"
    inner = r"[^\x00]"
    core = f"{edge}(?:{inner}{{0,{max_len - 2}}}{edge})?"
    return f"^[{WS}]*{core if required else f'(?:{core})?'}[{WS}]*$"


def text(min_len: int = 0, max_len: int = 1000) -> Field:
    """A string, trimmed; empty becomes None unless min_len (0 or 1) is 1."""
    if min_len not in (0, 1):
        raise ValueError("text() documents a minimum of 0 or 1 characters only")

    def parse(value: Any) -> str | None:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if not is_text(value):
            raise ValueError(NOT_TEXT)
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if len(value) < min_len:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value or None

    empty = "" if min_len else "; empty or only whitespace means null"
    return Field(parse, {
        "type": "string",
        "pattern": trimmed_pattern(max_len, required=min_len == 1),
        "description": f"trimmed; at most {max_len} characters{empty}",
    })  # fmt: skip


def matching(regex: re.Pattern[str], max_len: int, message: str, description: str) -> Field:
    """A non-empty string, trimmed, that `regex` (of at most `max_len` characters) matches
    whole; `message` when it does not."""
    base = text(min_len=1, max_len=max_len)

    def parse(value: Any) -> str:
        value = base.parse(value)
        if not regex.fullmatch(value):
            raise ValueError(message)
        return value

    pattern = f"^[{WS}]*(?:{regex.pattern})[{WS}]*$"
    return Field(parse, {"type": "string", "pattern": pattern, "description": description})


# Built once: a Field is made with its document pattern, which costs more than a check.
EMAIL_MAX = 254
_email_text = text(max_len=EMAIL_MAX)
_phone_text = text(max_len=40)


def _email(value: Any) -> str | None:
    value = _email_text(value)
    if value is None:
        return None
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address like jane@example.com")
    local, _, domain = value.rpartition("@")
    stored = f"{local}@{domain.lower()}"
    if len(stored) > EMAIL_MAX:  # lower-casing can lengthen a character ("İ" -> "i̇")
        raise ValueError(f"must be at most {EMAIL_MAX} characters with its domain lower-cased")
    return stored


_EMAIL_CHAR = f"[^@{WS}\\x00]"
email = Field(_email, {
    "type": "string",
    "pattern": f"^[{WS}]*(?:{_EMAIL_CHAR}+@{_EMAIL_CHAR}+\\.[^@.{WS}\\x00]{{2,}})?[{WS}]*$",
    # Two patterns, as a lookahead would be: JSON Schema has no "and" inside one pattern
    # that every generator handles.
    "allOf": [{"pattern": trimmed_pattern(EMAIL_MAX)}],
    "description": f"an address like jane@example.com, at most {EMAIL_MAX} characters once "
    "trimmed and its domain lower-cased; empty or only whitespace means null",
})  # fmt: skip


def _phone(value: Any) -> str | None:
    """Keep a leading + and the digits: '+1 (234) 567-890' -> '+1234567890'."""
    value = _phone_text(value)
    if value is None:
        return None
    if not _PHONE_CHARS.fullmatch(value) or value.count("+") > 1 or "+" in value.lstrip()[1:]:
        raise ValueError("must be a phone number: digits, spaces, + ( ) - . only")
    digits = _NOT_DIGIT.sub("", value)
    if not 4 <= len(digits) <= 20:
        raise ValueError("must have between 4 and 20 digits")
    return ("+" if value.startswith("+") else "") + digits


_PHONE_SEPARATORS = f"[()\\-./{WS}]"
phone = Field(_phone, {
    "type": "string",
    "pattern": f"^[{WS}]*(?:\\+?{_PHONE_SEPARATORS}*(?:[0-9]{_PHONE_SEPARATORS}*){{4,20}})?"
               f"[{WS}]*$",
    "allOf": [{"pattern": trimmed_pattern(40)}],
    "description": "digits with spaces and ( ) - . / between them, a + only first; 4 to 20 "
    "digits, at most 40 characters once trimmed; stored as + and digits ('+1 (234) "
    "567-890' -> '+1234567890'); empty or only whitespace means null",
})  # fmt: skip


def _tags(value: Any) -> list[str]:
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
        if "\x00" in tag:  # as text() and central's sync/protocol.py refuse it
            raise ValueError("every tag must not contain NUL characters")
        tag = tag.strip()
        if len(tag) > 50:
            raise ValueError("every tag must be at most 50 characters")
        if tag not in clean:
            clean.append(tag)
    return clean


tags = Field(_tags, {
    "type": "array",
    "maxItems": 20,
    "items": {"type": "string", "pattern": trimmed_pattern(50, required=True),
              "description": "trimmed; 1 to 50 characters"},
    "description": "replaces the customer's tags; duplicates are dropped",
})  # fmt: skip


def integer(minimum: int = 0, maximum: int = MAX_AMOUNT) -> Field:
    """A JSON integer (not a float, string or boolean) within bounds."""

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number (integer minor units, e.g. 10000)")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    # JSON Schema's integer takes 10000.0 too; the node does not (money is never a float),
    # as the document's description says once for all.
    return Field(parse, {"type": "integer", "minimum": minimum, "maximum": maximum})


amount = integer(minimum=1).describe("minor units (cents)")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


boolean = Field(_boolean, {"type": "boolean"})


def choice(*options: str) -> Field:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError("must be one of: " + ", ".join(options))
        return value

    return Field(parse, {"type": "string", "enum": list(options)})


def canonical_uuid(value: Any) -> str | None:
    """The lower-case form of a UUID written 8-4-4-4-12 (any case), else None."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        return None
    return value.lower()  # what str(uuid.UUID(value)) gives, at a fraction of its cost


def _uuid(value: Any) -> str:
    parsed = canonical_uuid(value)
    if parsed is None:
        raise ValueError("must be a UUID")
    return parsed


UUID_SCHEMA: Schema = {"type": "string", "format": "uuid", "pattern": f"^{_UUID.pattern}$"}
uuid = Field(_uuid, UUID_SCHEMA)
