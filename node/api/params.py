"""Reading requests (JSON bodies, ids, paging) and writing list and idempotent responses."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node import idempotency
from node.api.keys import TOKEN
from node.api.problems import Malformed, TooSlow
from node.errors import Invalid, invalid
from node.validation import NOT_TEXT, canonical_uuid, is_text

MAX_LIMIT = 100
# A whole body (at most 1 MiB) must arrive within this; a client dribbling bytes is cut off.
BODY_TIMEOUT = 15.0


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.json_response(body, status=status, headers=headers)


async def read_body(request: web.Request) -> bytes:
    """The raw body, within BODY_TIMEOUT; 400 if its Content-Encoding does not decode."""
    try:
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


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take ' 5', '+5', '1_0' and other scripts' digits.
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise invalid(name, "must be a whole number")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise invalid(name, f"must be between {lo} and {hi}" if hi else f"must be at least {lo}")
    return value


def query_choice(request: web.Request, name: str, options: list[str], default: Any) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in options:
        raise invalid(name, "must be one of: " + ", ".join(options))
    return raw


def paging(request: web.Request, default_limit: int = 20) -> tuple[int, int]:
    page = query_int(request, "page", 1, 1, 1_000_000)
    limit = query_int(request, "limit", default_limit, 1, MAX_LIMIT)
    return page, limit


def list_response(request: web.Request, rows: list, total: int, page: int, limit: int):
    """A bare JSON array with X-Total-Count and an RFC 8288 Link header."""
    links = []
    if page * limit < total:
        links.append(f'<{request.rel_url.update_query(page=page + 1)}>; rel="next"')
    if page > 1:
        last = max(1, -(-total // limit))
        links.append(f'<{request.rel_url.update_query(page=min(page - 1, last))}>; rel="prev"')
    headers = {"X-Total-Count": str(total)}
    if links:
        headers["Link"] = ", ".join(links)
    return json_response(rows, headers=headers)


async def idempotent(
    request: web.Request, write: Callable[[Any], tuple[int, Any]], allow_empty: bool = False
) -> web.Response:
    """Run a money write once per Idempotency-Key; without a key, just run it."""
    raw = await read_body(request)
    body = await read_json(request, allow_empty=allow_empty)
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, result = write(body)
        return json_response(result, status=status)
    key = idempotency.check_key(key)
    # Lower-cased: the ids in a path are UUIDs, which are the same in either case.
    fingerprint = idempotency.fingerprint(request.method, request.path.lower(), raw)
    scope = request[TOKEN]["name"]  # per client; a token re-issued under its name keeps its keys
    status, result, replayed = idempotency.run_once(scope, key, fingerprint, lambda: write(body))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_response(result, status=status, headers=headers)
