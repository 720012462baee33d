"""Each declared request value's schema says exactly what its parser accepts.

The request bodies and query parameters of the OpenAPI document are generated from the
declarations the routes validate with (node.validation.Field, node.api.params.Query); a
field's parser and its schema are built from the same arguments. Here, field by field,
values near every edge (Unicode whitespace around and inside, NUL, lengths before and after
trimming, bounds, wrong JSON types, strings generated from the schema's own patterns) must
be accepted by the parser exactly when the document calls them valid. Where JSON Schema
cannot say a rule, the gap is named (GAPS) and only goes one way: the document is looser,
never the node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.api import customers, ledger, reports, sales
from node.api.openapi import INPUTS
from node.api.params import Query
from node.errors import Invalid
from node.periods import period
from node.validation import Field
from tests.node.schema_check import validator

WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u1680",
              "\u2000", "\u2028", "\u202f", "\u3000"]  # fmt: skip
# Near-misses of whitespace, and characters the patterns treat specially.
ALPHABET = [*WHITESPACE, "\x00", "\x01", "\x7f", "\ufeff", "\u200b", "a", "Z", "é", "ſ", "0",
            "7", "@", ".", "-", "_", "/", "+", "(", ")", "!", ":", "T", "z"]  # fmt: skip
LENGTHS = [0, 1, 2, 3, 4, 5, 8, 20, 21, 39, 40, 41, 42, 49, 50, 51, 52, 199, 200, 201, 202,
           253, 254, 255, 256, 499, 500, 501, 502, 1999, 2000, 2001, 2002]  # fmt: skip


def unique_fields() -> list[tuple[str, Field]]:
    """Every field of every documented request body, once (CustomerInput and CustomerUpdate
    share theirs)."""
    seen: dict[int, tuple[str, Field]] = {}
    for body in INPUTS:
        for name, field in body.fields.items():
            seen.setdefault(id(field), (f"{body.name}.{name}", field))
    return sorted(seen.values(), key=lambda item: item[0])


FIELDS = unique_fields()


def patterns(schema: dict[str, Any]) -> list[str]:
    return [s["pattern"] for s in (schema, *schema.get("allOf", [])) if "pattern" in s]


def edged(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`text` with whitespace around it, and sometimes a character of ALPHABET inside."""

    def change(value: str, before: str, after: str, insert: str, where: int) -> str:
        if insert:
            where %= len(value) + 1
            value = value[:where] + insert + value[where:]
        return before + value + after

    ws = st.text(st.sampled_from(WHITESPACE), max_size=3)
    return st.builds(change, text, ws, ws, st.one_of(st.just(""), st.sampled_from(ALPHABET)),
                     st.integers(0, 3000))  # fmt: skip


def strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Strings near the edges of `schema`: from its own patterns, its enum, and any text of
    ALPHABET at lengths around every limit in the document."""
    some = [st.sampled_from(LENGTHS).flatmap(
        lambda n: st.text(st.sampled_from(ALPHABET), min_size=n, max_size=n))]  # fmt: skip
    some += [edged(st.from_regex(pattern)) for pattern in patterns(schema)]
    if "enum" in schema:
        some.append(edged(st.sampled_from([s for s in schema["enum"] if isinstance(s, str)])))
    examples = ["jane@example.com", "a@b.co", "+1 (234) 567-890", "REC-20250518-001", "usd",
                "KWD", "0190a5e4-8b1c-7c3e-9a00-0123456789ab", "1.5", "1"]  # fmt: skip
    some.append(edged(st.sampled_from(examples)))
    return st.one_of(some)


def edges(schema: dict[str, Any]) -> list[Any]:
    """Values at the edges, every one tried: text fine but for its length (a character
    repeated, an address, a number), with and without whitespace around; numbers at the
    bounds; a value of each JSON type."""
    texts = [*(c * n for c in "x1é" for n in LENGTHS),
             *("a" * n + "@example.com" for n in range(240, 245)),
             *(("1 " * n).strip() for n in range(18, 23)), *("1" * n for n in range(18, 23)),
             *("1--" * 13 + "1" + "-" * n for n in range(3)),
             *schema.get("enum", [])]  # fmt: skip
    low, high = schema.get("minimum", 0), schema.get("maximum", 10**12)
    numbers = [low - 1, low, low + 1, high - 1, high, high + 1, 1.5, 1.0]
    return [*texts, *(f" {t}\u3000" for t in texts), *numbers, True, None, [], {}, [""],
            ["x" * 51], [f"t{i}" for i in range(21)]]  # fmt: skip


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """JSON values of every type, near the edges of `schema`."""
    low, high = schema.get("minimum", 0), schema.get("maximum", 10**12)
    leaves = st.one_of(
        strings(schema),
        st.integers(low - 2, low + 2), st.integers(high - 2, high + 2), st.integers(),
        st.floats(allow_nan=False), st.sampled_from([1.0, 10000.0, 0.5, 0.0003, 1e-7, 1e3]),
        st.booleans(), st.none(),
    )  # fmt: skip
    items = schema.get("items", {})
    lists = st.lists(st.one_of(strings(items), leaves), max_size=22)
    return st.one_of(leaves, lists, st.dictionaries(st.text(max_size=3), leaves, max_size=2))


def accepted(parse: Callable[[Any], Any], value: Any) -> bool:
    try:
        parse(value)
    except (ValueError, Invalid):
        return False
    return True


def integral_float(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


def more_than_4_decimals(value: Any) -> bool:
    return isinstance(value, int | float) and Decimal(str(value)).as_tuple().exponent < -4


# What a schema cannot say, by the keyword that says something close; the descriptions say
# the rest. JSON Schema's integer takes 10000.0, which the node refuses (money is never a
# float; the document's info says so), and multipleOf 0.0001 is binary floating point in
# most validators (node.settings.FIELDS).
GAPS: dict[str, Callable[[Any], bool]] = {
    "integer": integral_float,
    "SettingsInput.earn_rate": more_than_4_decimals,
}


def in_gap(name: str, schema: dict[str, Any], value: Any) -> bool:
    types = schema.get("type", [])
    kinds = types if isinstance(types, list) else [types]
    return ("integer" in kinds and GAPS["integer"](value)) or (
        name in GAPS and GAPS[name](value)
    )


def check(name: str, field: Field, schema: dict[str, Any], value: Any) -> None:
    documented = validator(schema).is_valid(value)
    taken = accepted(field.parse, value)
    assert not taken or documented, f"{name}: {value!r} is accepted but not documented"
    assert taken or not documented or in_gap(name, schema, value), (
        f"{name}: {value!r} is documented but refused"
    )


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_body_field_accepts_exactly_what_its_schema_says(name: str, field: Field) -> None:
    schema = field.schema
    for value in edges(schema):
        check(name, field, schema, value)

    @settings(max_examples=150, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(values(schema))
    def run(value: Any) -> None:
        check(name, field, schema, value)

    run()


# Every query parameter, by where it is read; `from` and `to` are read together by period().
QUERIES: list[tuple[str, Query]] = sorted(
    {f"{p.name}": p for group in (customers.LIST_QUERY, ledger.LEDGER_QUERY, sales.SALES_QUERY,
                                  reports.RECEIVABLES_QUERY) for p in group}.items()
)  # fmt: skip


def read(param: Query, raw: str) -> Any:
    """The parameter as its route reads it from `?name=raw`."""
    request = make_mocked_request("GET", "/?" + urlencode({param.name: raw}))
    value = param.read(request)
    if param.name in ("from", "to"):
        period(*((value, None) if param.name == "from" else (None, value)))
    return value


def text_of(schema: dict[str, Any]) -> bool:
    """Whether the query parameter's schema describes text (not a number)."""
    return "anyOf" not in schema


def impossible_moment(raw: str) -> bool:
    """A date or time of the documented form that is not on the calendar (2025-02-30, year
    0000, an offset before its start): the pattern cannot tell."""
    try:
        datetime.fromisoformat(raw.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return True
    return False


@pytest.mark.parametrize(("name", "param"), [q for q in QUERIES if text_of(q[1].schema)],
                         ids=[n for n, q in QUERIES if text_of(q.schema)])  # fmt: skip
def test_every_text_query_parameter_accepts_exactly_what_its_schema_says(
    name: str, param: Query
) -> None:
    schema = param.schema
    examples = ["2025-05-18", "2025-05-18T10:00:00Z", "2025-05-18t10:00:00.5+05:30",
                "2025-02-30", "2025-05-18T25:00:00Z", "0000-01-01",
                "0001-01-01T00:00:00+00:01", "ASC", "desc", "name", "98200"]

    def check_text(raw: str) -> None:
        raw = raw.replace("\x00", "")  # a URL cannot carry it to the handler as text
        documented = validator(schema).is_valid(raw)
        taken = accepted(lambda value: read(param, value), raw)
        assert not taken or documented, f"{name}: {raw!r} is accepted but not documented"
        gap = name in ("from", "to") and impossible_moment(raw)
        assert taken or not documented or gap, f"{name}: {raw!r} is documented but refused"

    for raw in [*examples, *(t for t in edges(schema) if isinstance(t, str))]:
        check_text(raw)

    @settings(max_examples=100, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(strings(schema), edged(st.sampled_from(examples))))
    def run(raw: str) -> None:
        check_text(raw)

    run()


def test_whole_number_parameters_take_ascii_digits_within_their_bounds() -> None:
    for name, param in QUERIES:
        if text_of(param.schema):
            continue
        number = param.schema["anyOf"][0]
        low, high = number["minimum"], number["maximum"]
        assert read(param, "") == param.default
        for raw in (str(low), str(high), f"0{low}"):
            assert read(param, raw) == int(raw), (name, raw)
        for raw in (str(low - 1), str(high + 1), "1.0", "+1", " 1", "1_0", "٣", "x", "1e2"):
            assert not accepted(lambda value, p=param: read(p, value), raw), (name, raw)


def all_patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in all_patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in all_patterns(value)]
    return []


def test_patterns_read_the_same_in_python_and_ecma_262() -> None:
    """The document's patterns are written for both: no Python-only syntax (named groups,
    inline flags, \\A or \\Z), and each compiles."""
    from node.api.openapi import DOCUMENT

    found = all_patterns(DOCUMENT)
    assert len(found) > 10
    for pattern in found:
        re.compile(pattern)
        assert not re.search(r"\(\?P|\(\?[aiLmsux]|\\A|\\Z", pattern), pattern
