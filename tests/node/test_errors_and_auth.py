"""Every failure is RFC 9457 problem+json; tokens and roles guard the API."""

from __future__ import annotations

import io

import pytest

from node import tokens
from tests.node.conftest import problem


async def test_missing_and_bad_tokens_are_401(api):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):  # fmt: skip
        response = await api.client.get("/api/v1/customers", headers=headers)
        assert response.status == 401
        assert "Bearer" in response.headers["WWW-Authenticate"]
        await problem(response)


async def test_revoked_token_stops_working(api):
    secret = tokens.create_token("temp", "staff")
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.client.get("/api/v1/customers", headers=headers)).status == 200
    tokens.revoke_token("temp")
    assert (await api.client.get("/api/v1/customers", headers=headers)).status == 401


async def test_openapi_and_health_need_no_token(api):
    assert (await api.client.get("/api/v1/openapi.json")).status == 200
    health = await api.client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"


async def test_staff_may_sell_and_take_payments_but_not_owner_actions(api):
    customer = await api.customer()
    cid = customer["id"]
    assert (await api.post("/api/v1/sales", staff=True, json={
        "customer_id": cid, "total": 100, "payment_method": "account"})).status == 201
    assert (await api.post(f"/api/v1/customers/{cid}/ledger", staff=True,
                           json={"type": "credit", "amount": 100})).status == 201
    for method, path, body in [
        ("POST", f"/api/v1/customers/{cid}/ledger", {"type": "debit", "amount": 5}),
        ("PATCH", "/api/v1/settings", {"point_value": 5}),
        ("DELETE", f"/api/v1/customers/{cid}", None),
    ]:
        response = await api.request(method, path, staff=True, json=body)
        assert response.status == 403, (method, path)
        await problem(response)
    got = await api.get_customer(cid)
    assert got["ledger_balance"] == 0


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"nul", b"\xff\xfe", b"[1,2", b'{"a":}'])
async def test_unreadable_bodies_are_4xx_problems(api, raw):
    response = await api.post("/api/v1/customers", data=raw)
    assert response.status in (400, 422)
    await problem(response)
    assert await api.ok("GET", "/api/v1/customers") == []


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null", "true"])
async def test_json_that_is_not_an_object_is_422(api, body):
    response = await api.post("/api/v1/customers", data=body)
    assert response.status == 422
    assert (await problem(response))["errors"][0]["field"] == "body"


async def test_body_over_one_mebibyte_is_413(api):
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await api.post("/api/v1/customers", data=io.BytesIO(big))
    assert response.status == 413
    await problem(response)
    assert await api.ok("GET", "/api/v1/customers") == []


async def test_unknown_routes_and_methods(api):
    response = await api.get("/api/v1/nothing-here")
    assert response.status == 404
    await problem(response)
    response = await api.client.get("/favicon.ico")
    assert response.status == 404
    await problem(response)
    response = await api.request("DELETE", "/api/v1/customers")
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    await problem(response)


@pytest.mark.parametrize("bad", ["123", "not-a-uuid", "'; DROP TABLE customer; --", "%00"])
async def test_bad_uuids_are_400(api, bad):
    for method in ("GET", "PATCH", "DELETE"):
        response = await api.request(method, f"/api/v1/customers/{bad}", json={"name": "x"})
        assert response.status == 400, (method, bad)
        body = await problem(response)
        assert body["errors"][0]["field"] == "id"


async def test_wrong_types_everywhere_never_500(api):
    customer = await api.customer()
    cid = customer["id"]
    weird = [None, True, 1.5, -1, "1", [], {}, "x" * 5000, 10**30]
    paths = [
        ("POST", "/api/v1/customers"),
        ("PATCH", f"/api/v1/customers/{cid}"),
        ("POST", f"/api/v1/customers/{cid}/ledger"),
        ("POST", f"/api/v1/customers/{cid}/loyalty/redeem"),
        ("POST", "/api/v1/sales"),
        ("PATCH", "/api/v1/settings"),
    ]
    fields = ["name", "email", "tags", "type", "amount", "points", "sale_id", "customer_id",
              "total", "payment_method", "earn_rate", "currency", "default_credit_limit"]
    for method, path in paths:
        for field in fields:
            for value in weird:
                response = await api.request(method, path, json={field: value})
                # Some combinations are valid (a customer named "1"); none may crash.
                assert response.status < 500, (method, path, field, value)
                assert response.content_type in ("application/json", "application/problem+json")
    after = await api.get_customer(cid)
    assert after["ledger_balance"] == 0 and after["loyalty_points"] == 0


async def test_staff_cannot_raise_a_credit_limit_to_get_round_it(api):
    await api.ok("PATCH", "/api/v1/settings", json={"default_credit_limit": 1000})
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}"
    assert (await api.patch(path, staff=True, json={"credit_limit": 10**12})).status == 403
    assert (await api.post("/api/v1/customers", staff=True,
                           json={"name": "B", "credit_limit": 5})).status == 403  # fmt: skip
    assert (await api.get_customer(customer["id"]))["credit_limit"] is None
    assert (await api.patch(path, json={"credit_limit": 5000})).status == 200


@pytest.mark.parametrize("query", [
    {"to": "9999-12-31"}, {"to": "9999-12-31T23:59:59.999999Z"},
    {"from": "0001-01-01T00:00:00+00:01"}, {"from": "2025-13-01"},
])  # fmt: skip
async def test_dates_at_the_ends_of_the_calendar_never_500(api, query):
    customer = await api.customer()
    for path in (f"/api/v1/customers/{customer['id']}/ledger", "/api/v1/reports/loyalty"):
        response = await api.get(path, params=query)
        assert response.status in (200, 422), (path, query, response.status)


async def test_control_characters_in_search_and_deep_json_are_client_errors(api):
    response = await api.get("/api/v1/customers", params={"search": "\x00abc"})
    assert response.status == 422
    await problem(response)
    for path in ("/api/v1/customers", "/api/v1/sales"):
        response = await api.post(path, data="[" * 100_000)
        assert response.status == 400
        await problem(response)
