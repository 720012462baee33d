"""Reading requests (JSON bodies, ids, declared query parameters) and writing list and
idempotent responses."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node import idempotency, periods, writer
from node.api.keys import TOKEN
from node.api.problems import Malformed, TooSlow
from node.errors import Invalid, invalid
from node.validation import NOT_TEXT, Schema, canonical_uuid, is_text

MAX_LIMIT = 100
# A whole body (at most 1 MiB) must arrive within this; a client dribbling bytes is cut off.
BODY_TIMEOUT = 15.0


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.json_response(body, status=status, headers=headers)


async def read_body(request: web.Request) -> bytes:
    """The raw body, within BODY_TIMEOUT; 400 if its Content-Encoding does not decode."""
    try:
        if request.content.is_eof():  # all of it has come (a small body comes with the head)
            return await request.read()
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise TooSlow(f"the request body did not arrive within {BODY_TIMEOUT:g} seconds") from None
    except (HttpProcessingError, web.RequestPayloadError):
        raise Malformed(
            [("body", "does not decode with its Content-Encoding")],
            "the request body could not be decoded (is it really gzip?)",
        ) from None


async def read_json(request: web.Request, allow_empty: bool = False) -> Any:
    """The request's JSON body (whatever the Content-Type says); a 422 if it is not JSON."""
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return None
        raise invalid("body", "the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Malformed(
            [("body", f"is not valid JSON: {exc}")], "the request body is not valid JSON"
        ) from None
    broken = [(field, NOT_TEXT) for field in not_unicode(body)]
    if broken:
        raise Invalid(broken)
    return body


def not_unicode(value: Any, where: str = "") -> Iterator[str]:
    """Paths (`name`, `tags[2]`) of strings that are not Unicode text, keys included."""
    if isinstance(value, str):
        if not is_text(value):
            yield where or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if not is_text(key):
                yield (where + "." if where else "") + key.encode("utf-8", "replace").decode()
            else:
                yield from not_unicode(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from not_unicode(item, f"{where}[{index}]")


def path_id(request: web.Request, name: str = "id") -> str:
    value = canonical_uuid(request.match_info[name])
    if value is None:
        detail = f"'{request.match_info[name]}' is not a valid id"
        raise Malformed([(name, "must be a UUID")], detail)
    return value


@dataclass(frozen=True)
class Query:
    """A query parameter: how its text is read and what the document says of it. Absent or
    empty means `default`; `schema` says what the text may be, empty included."""

    name: str
    parse: Callable[[str], Any]
    schema: Schema
    default: Any
    description: str

    def read(self, request: web.Request) -> Any:
        """The parameter's value in `request`; Invalid naming it when it cannot be read."""
        raw = request.query.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise invalid(self.name, str(exc)) from None

    def document(self) -> dict[str, Any]:
        """The parameter as an OpenAPI Parameter Object."""
        return {"name": self.name, "in": "query", "required": False, "schema": self.schema,
                "description": self.description}  # fmt: skip


def read_query(request: web.Request, params: Iterable[Query]) -> dict[str, Any]:
    """Every parameter of `params` by name; Invalid listing every one that cannot be read."""
    values: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for param in params:
        try:
            values[param.name] = param.read(request)
        except Invalid as error:
            errors.extend(error.errors)
    if errors:
        raise Invalid(errors)
    return values


def whole_number(name: str, lo: int, hi: int, default: int, description: str) -> Query:
    """A whole number from `lo` to `hi`, in ASCII digits."""

    def parse(raw: str) -> int:
        # ASCII digits only: int() would also take ' 5', '+5', '1_0' and other scripts' digits.
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise ValueError("must be a whole number")
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    schema = {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi}, {"const": ""}],
              "default": default}  # fmt: skip
    return Query(name, parse, schema, default, f"{description}; empty: {default}")


def one_of(name: str, options: Iterable[str], default: str, description: str) -> Query:
    """One of `options`, as written."""
    choices = list(options)

    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError("must be one of: " + ", ".join(choices))
        return raw

    schema = {"type": "string", "enum": ["", *choices], "default": default}
    return Query(name, parse, schema, default, f"{description}; empty: {default}")


PAGE = whole_number("page", 1, 1_000_000, 1, "page number")
# Checked together by node.periods.period (which also refuses `from` after `to`).
PERIOD = (
    Query("from", str, {"type": "string", "pattern": periods.PATTERN}, None,
          f"inclusive start: {periods.FORMS} (a date: the shop's day, [node] timezone); "
          "empty: none"),
    Query("to", str, {"type": "string", "pattern": periods.PATTERN}, None,
          f"inclusive end: {periods.FORMS} (a date: the shop's whole day); empty: none"),
)  # fmt: skip


def per_page(default: int) -> Query:
    return whole_number("limit", 1, MAX_LIMIT, default, f"items per page (at most {MAX_LIMIT})")


def list_response(
    request: web.Request, rows: list | str, total: int, page: int, limit: int,
    capped: bool = False, more: bool = False,
):  # fmt: skip
    """A bare JSON array (`rows`, or its JSON text) with X-Total-Count and an RFC 8288 Link
    header. A `capped` total counted only the first `total` items (X-Total-Count-Capped says
    so): whether a next page has any is then `more`, and the last page is not known."""
    links = []
    has_next = more if capped else page * limit < total
    if has_next:
        links.append(f'<{request.rel_url.update_query(page=page + 1)}>; rel="next"')
    if page > 1:
        last = page - 1 if capped else max(1, -(-total // limit))
        links.append(f'<{request.rel_url.update_query(page=min(page - 1, last))}>; rel="prev"')
    headers = {"X-Total-Count": str(total)}
    if capped:
        headers["X-Total-Count-Capped"] = "true"
    if links:
        headers["Link"] = ", ".join(links)
    if isinstance(rows, str):
        return web.Response(text=rows, content_type="application/json", headers=headers)
    return json_response(rows, headers=headers)


async def idempotent(
    request: web.Request, write: Callable[[Any], tuple[int, Any]], allow_empty: bool = False
) -> web.Response:
    """Run a money write once per Idempotency-Key; without a key, just run it."""
    body = await read_json(request, allow_empty=allow_empty)
    raw = await request.read()  # read by read_json: aiohttp keeps it
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, result = await writer.write(lambda: write(body))
        return json_response(result, status=status)
    key = idempotency.check_key(key)
    # Lower-cased: the ids in a path are UUIDs, which are the same in either case.
    fingerprint = idempotency.fingerprint(request.method, request.path.lower(), raw, body)
    scope = request[TOKEN]["name"]  # per client; a token re-issued under its name keeps its keys
    status, text, replayed = await writer.write(
        lambda: idempotency.run_once(scope, key, fingerprint, lambda: write(body))
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    # The JSON text stored with the key is what json_response would send.
    return web.Response(text=text, status=status, headers=headers,
                        content_type="application/json")  # fmt: skip
