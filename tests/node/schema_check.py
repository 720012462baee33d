"""JSON Schema validation as the OpenAPI document means it: patterns are ECMA-262 regexes.

Python's `$` also matches before a string's final newline ('USD\\n' would pass '^USD$');
ECMA-262's, without the m flag, only at the end, and that is what a client in another
language reads in the document. Every pattern of the document ends in its one `$`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators


@cache
def ecma(pattern: str) -> re.Pattern[str]:
    """`pattern` with its closing `$` read as ECMA-262 reads it."""
    assert pattern.count("$") == 1 and pattern.endswith("$"), pattern
    return re.compile(pattern[:-1] + r"\Z")


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


_made: dict[int, tuple[dict[str, Any], Any]] = {}


def validator(schema: dict[str, Any]) -> Any:
    """A Draft 2020-12 validator of `schema` that asserts formats and reads patterns as
    ECMA-262 does (one per schema: the property tests ask thousands of times)."""
    held = _made.get(id(schema))
    if held is None or held[0] is not schema:
        made = EcmaValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        held = _made[id(schema)] = (schema, made)
    return held[1]
