"""The OpenAPI document matches the code: every route documented, real responses valid."""

from __future__ import annotations

import re

from jsonschema import Draft202012Validator

from node.api.openapi import DOCUMENT

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def registered_operations(app) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method in METHODS
    }


def documented_operations() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}


async def test_every_route_is_documented_and_nothing_else(api):
    assert registered_operations(api.client.app) == documented_operations()


async def test_served_document_is_openapi_31_and_refs_resolve(api):
    served = await api.ok("GET", "/api/v1/openapi.json")
    assert served["openapi"].startswith("3.1")
    text = str(served)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in served["components"]["schemas"], name
    for schema in served["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, item in served["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path, (method, path)


class Checker:
    """Validates real responses against the documented response schemas."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(self, response, method: str, template: str) -> object:
        operation = DOCUMENT["paths"][template][method.lower()]
        documented = operation["responses"].get(str(response.status))
        assert documented, f"{method} {template} answered undocumented {response.status}"
        content_type = response.content_type
        assert content_type in documented["content"], (method, template, content_type)
        schema = documented["content"][content_type]["schema"]
        body = await response.json(content_type=None)
        validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (method, template, response.status, errors[:3])
        for header in documented.get("headers", {}):
            assert header in response.headers or header == "Link", (template, header)
        self.seen.add((method.lower(), template, response.status))
        return body


async def test_real_responses_match_their_schemas(api):
    check = Checker()
    c = "/api/v1/customers/{id}"
    r = await api.post(
        "/api/v1/customers",
        json={"name": "Jane", "email": "j@example.com", "tags": ["vip"], "credit_limit": 50000},
    )
    customer = await check(r, "POST", "/api/v1/customers")
    cid = customer["id"]
    await check(await api.post("/api/v1/customers", json={"name": ""}), "POST", "/api/v1/customers")
    await check(await api.get("/api/v1/customers", params={"limit": 1}), "GET", "/api/v1/customers")
    await check(await api.get(f"/api/v1/customers/{cid}"), "GET", c)
    await check(await api.get("/api/v1/customers/nope"), "GET", c)
    await check(await api.patch(f"/api/v1/customers/{cid}", json={"notes": "n"}), "PATCH", c)
    await check(
        await api.request("PUT", f"/api/v1/customers/{cid}", json={"phone": "+123456"}), "PUT", c
    )
    sale_r = await api.post(
        "/api/v1/sales", json={"customer_id": cid, "total": 15000, "payment_method": "account"}
    )
    sale = await check(sale_r, "POST", "/api/v1/sales")
    await check(
        await api.post(
            "/api/v1/sales", json={"customer_id": cid, "total": 10**9, "payment_method": "account"}
        ),
        "POST",
        "/api/v1/sales",
    )  # 409 credit limit
    await check(await api.get(f"/api/v1/sales/{sale['id']}"), "GET", "/api/v1/sales/{id}")
    await check(await api.get(f"/api/v1/customers/{cid}/sales"), "GET", c + "/sales")
    ledger = c + "/ledger"
    pay = await api.post(
        f"/api/v1/customers/{cid}/ledger", json={"type": "credit", "amount": 10000}
    )
    entry = await check(pay, "POST", ledger)
    await check(
        await api.post(
            f"/api/v1/customers/{cid}/ledger", json={"type": "debit", "amount": 5}, staff=True
        ),
        "POST",
        ledger,
    )  # 403
    await check(await api.get(f"/api/v1/customers/{cid}/ledger"), "GET", ledger)
    await check(
        await api.post(f"/api/v1/customers/{cid}/ledger/{entry['id']}/reverse"),
        "POST",
        ledger + "/{entry_id}/reverse",
    )
    await check(
        await api.post(f"/api/v1/customers/{cid}/loyalty/redeem", json={"points": 10}),
        "POST",
        c + "/loyalty/redeem",
    )
    await check(
        await api.post(f"/api/v1/customers/{cid}/loyalty/redeem", json={"points": 10**6}),
        "POST",
        c + "/loyalty/redeem",
    )  # 409
    await check(
        await api.post(f"/api/v1/sales/{sale['id']}/refund", json={"amount": 1000}),
        "POST",
        "/api/v1/sales/{id}/refund",
    )
    await check(await api.get("/api/v1/settings"), "GET", "/api/v1/settings")
    await check(
        await api.patch("/api/v1/settings", json={"default_credit_limit": None}),
        "PATCH",
        "/api/v1/settings",
    )
    await check(await api.get("/api/v1/reports/receivables"), "GET", "/api/v1/reports/receivables")
    await check(
        await api.get("/api/v1/reports/loyalty", params={"from": "2020-01-01"}),
        "GET",
        "/api/v1/reports/loyalty",
    )
    await check(await api.get("/api/v1/sync/status"), "GET", "/api/v1/sync/status")
    await check(await api.client.get("/healthz"), "GET", "/healthz")
    await check(await api.client.get("/api/v1/customers"), "GET", "/api/v1/customers")  # 401
    await check(await api.delete(f"/api/v1/customers/{cid}"), "DELETE", c)
    await check(await api.client.get("/api/v1/openapi.json"), "GET", "/api/v1/openapi.json")
    # Every documented operation was exercised at least once.
    assert {(m, p) for m, p, _ in check.seen} == documented_operations()


def test_text_patterns_accept_exactly_what_the_validators_accept():
    """The body patterns (trimmed text, email, tags) against node.validation, edge by edge:
    Unicode whitespace around and inside, NUL, the length limit before and after trimming."""
    import random

    from node import validation
    from node.customers import PROFILE_FIELDS

    fields = DOCUMENT["components"]["schemas"]["CustomerInput"]["properties"]
    cases = {
        "name": (re.compile(fields["name"]["pattern"]), PROFILE_FIELDS["name"], 200),
        "email": (re.compile(fields["email"]["pattern"]), PROFILE_FIELDS["email"], 30),
        "notes": (re.compile(fields["notes"]["pattern"]), PROFILE_FIELDS["notes"], 2000),
        "tag": (re.compile(fields["tags"]["items"]["pattern"]),
                lambda tag: validation.tags([tag]), 50),
    }  # fmt: skip
    alphabet = [" ", "\t", "\x00", "\x1c", "\x85", "\u3000", "\ufeff", "a", "@", ".", "é"]
    rng = random.Random(7)

    def accepted(parse, value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    for name, (pattern, parse, limit) in cases.items():
        for _ in range(3000):
            size = rng.choice([0, 1, 2, 3, 6, limit - 1, limit, limit + 1, limit + 2])
            value = "".join(rng.choice(alphabet) for _ in range(size))
            if name == "email" and rng.random() < 0.5:
                value = " " * rng.randint(0, 2) + "jo.e@ex.co" + value[:3]
            expected = accepted(parse, value)
            assert bool(pattern.search(value)) == expected, (name, value, expected)
