"""Hostile and broken input over real HTTP: every answer a 4xx problem+json, never a 500."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from node.api.auth import MAX_FAILURES
from node.api.keys import HEALTH

SURROGATE_BODIES = [
    ("POST", "/api/v1/customers", '{"name": "\\ud800"}', "name"),
    ("POST", "/api/v1/customers", '{"name": "Ann", "email": "ann@example.co\\udfff"}', "email"),
    ("POST", "/api/v1/customers", '{"name": "Ann", "notes": "x\\udc00y"}', "notes"),
    ("POST", "/api/v1/customers", '{"name": "Ann", "address": "\\udbff"}', "address"),
    ("POST", "/api/v1/customers", '{"name": "Ann", "tags": ["ok", "\\udfff"]}', "tags[1]"),
    ("POST", "/api/v1/customers", '{"name": "Ann", "\\ud800": 1}', "?"),
    ("PATCH", "/api/v1/customers/{id}", '{"name": "\\ud800x"}', "name"),
    ("PUT", "/api/v1/customers/{id}", '{"phone": "\\ud800"}', "phone"),
    ("POST", "/api/v1/customers/{id}/ledger",
     '{"type": "credit", "amount": 100, "description": "\\ud800"}', "description"),
    ("POST", "/api/v1/sales",
     '{"customer_id": "{id}", "total": 100, "payment_method": "cash", '
     '"receipt_number": "R\\udfff"}', "receipt_number"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "raw", "field"), SURROGATE_BODIES)
async def test_lone_surrogates_are_422_naming_the_field(api, method, path, raw, field) -> None:
    customer = await api.customer("Surrogate Target")
    body = raw.replace("{id}", customer["id"])
    response = await api.request(method, path.replace("{id}", customer["id"]), data=body.encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    problem = await response.json(content_type=None)
    assert response.status == 422, problem
    assert response.content_type == "application/problem+json"
    assert field in [error["field"] for error in problem["errors"]]
    # Nothing was stored: the customer is unchanged and has no entries or sales.
    assert (await api.get_customer(customer["id"]))["name"] == "Surrogate Target"


async def test_search_with_broken_percent_encoding_is_answered(api) -> None:
    for query in ("%ED%A0%80", "%FF%FE", "%00", "%C0%AF"):
        response = await api.get(f"/api/v1/customers?search={query}")
        assert response.status in (200, 422), (query, response.status)
        await response.read()


async def test_bearer_token_that_is_not_utf8_is_401(api) -> None:
    port = api.client.server.port
    request = (b"GET /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer \xff\xfe\x80\r\nConnection: close\r\n\r\n")  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"application/problem+json" in answer


async def test_gzip_body_that_is_not_gzip_is_400(api) -> None:
    response = await api.post("/api/v1/customers", data=b'{"name": "Ann"}',
                              headers={"Content-Encoding": "gzip",
                                       "Content-Type": "application/json"})  # fmt: skip
    problem = await response.json(content_type=None)
    assert response.status == 400, problem
    assert response.content_type == "application/problem+json"


async def test_healthz_says_only_liveness_even_when_sync_reports_debts(api) -> None:
    debt = "customer 0190-abc owes 5300, past the credit limit 1000"
    api.client.app[HEALTH]["sync"] = lambda: {
        "enabled": True, "origin": "0190-origin", "last_error": "ClientError: central said no",
        "last_success_at": "2020-01-01T00:00:00Z", "pull_cursor": 7,
        "recent_reports": [{"kind": "credit_limit_exceeded", "detail": debt}],
    }  # fmt: skip
    response = await api.client.get("/healthz")
    body = await response.json()
    assert set(body) == {"status", "version", "uptime_seconds", "sync"}
    assert set(body["sync"]) == {"healthy", "lag_seconds"}
    assert body["sync"]["healthy"] is False and body["sync"]["lag_seconds"] > 1e6
    for secret in ("owes", "0190", "central said no", "cursor"):
        assert secret not in await response.text()
    # The details are still there, behind a token.
    assert (await api.client.get("/api/v1/sync/status")).status == 401
    details = await api.ok("GET", "/api/v1/sync/status")
    assert details["recent_reports"][0]["detail"] == debt


async def test_failed_authentication_is_braked_per_client_address(api) -> None:
    statuses = []
    for attempt in range(MAX_FAILURES + 10):
        headers = {"Authorization": f"Bearer sn_wrong{attempt}"}
        statuses.append((await api.client.get("/api/v1/customers", headers=headers)).status)
    assert statuses[:MAX_FAILURES] == [401] * MAX_FAILURES
    assert set(statuses[MAX_FAILURES:]) == {429}
    limited = await api.client.get("/api/v1/customers", headers=api.owner)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.content_type == "application/problem+json"
    # A client at another address with a valid token is not affected.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), family=socket.AF_INET)
    async with aiohttp.ClientSession(connector=connector) as other:
        url = f"http://127.0.0.1:{api.client.server.port}/api/v1/customers"
        async with other.get(url, headers=api.owner) as response:
            assert response.status == 200


async def test_every_response_has_a_request_id_and_no_version_banner(api) -> None:
    for response in (await api.client.get("/healthz"), await api.get("/api/v1/nope"),
                     await api.client.get("/api/v1/customers")):  # fmt: skip
        assert len(response.headers["X-Request-Id"]) >= 8
        assert response.headers["Server"] == "shopnode"
    passed = await api.get("/api/v1/customers", headers={"X-Request-Id": "till-1-abcdef"})
    assert passed.headers["X-Request-Id"] == "till-1-abcdef"
    forged = await api.get("/api/v1/customers", headers={"X-Request-Id": "a\tb c=1 status=200"})
    assert forged.headers["X-Request-Id"] != "a\tb c=1 status=200"
