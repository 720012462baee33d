"""The OpenAPI document matches the code: every route documented, real responses valid,
every documented input constraint enforced and nothing undocumented accepted."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator

from node.api.openapi import DOCUMENT
from tests.node.conftest import CUSTOMERS, error_fields, problem
from tests.node.schema_check import ecma, validator

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
            optional = ("Link", "X-Total-Count-Capped")
            assert header in response.headers or header in optional, (template, header)
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
    await check(await api.get("/api/v1/status"), "GET", "/api/v1/status")
    await check(await api.get("/api/v1/status", staff=True), "GET", "/api/v1/status")  # 403
    await check(await api.client.get("/healthz"), "GET", "/healthz")
    await check(await api.client.get("/api/v1/customers"), "GET", "/api/v1/customers")  # 401
    await check_telegram(api, check, cid)
    await check(await api.delete(f"/api/v1/customers/{cid}"), "DELETE", c)
    await check(await api.client.get("/api/v1/openapi.json"), "GET", "/api/v1/openapi.json")
    # Every documented operation was exercised at least once.
    assert {(m, p) for m, p, _ in check.seen} == documented_operations()


async def check_telegram(api, check: Checker, cid: str) -> None:
    """The events feed and the bot's Telegram routes, for a customer who owes."""
    feed, t = "/api/v1/events", "/api/v1/telegram"
    await check(await api.get(feed, params={"after": 0, "limit": 5}), "GET", feed)
    await check(await api.get(feed, staff=True), "GET", feed)  # 403
    invite_path = "/api/v1/customers/{id}/telegram/invite"
    invite = await check(await api.post(invite_path.format(id=cid)), "POST", invite_path)
    code = {"code": invite["code"]}
    await check(await api.post(f"{t}/invites/check", json=code), "POST", f"{t}/invites/check")
    link = {**code, "telegram_user_id": 4242}
    await check(await api.post(f"{t}/links", json=link), "POST", f"{t}/links")
    await check(await api.post(f"{t}/links", json=link), "POST", f"{t}/links")  # 404: used
    await check(await api.post(invite_path.format(id=cid)), "POST", invite_path)  # 409: linked
    user = f"{t}/links/{{telegram_user_id}}"
    await check(await api.get(f"{t}/links/4242"), "GET", user)
    await api.pay(cid, 100)
    payment = (await api.ok("GET", f"{feed}?after=0&limit=100"))["events"][-1]
    receipt = {"change_id": payment["id"]}
    await check(await api.post(f"{t}/receipts", json=receipt), "POST", f"{t}/receipts")  # 201
    await check(await api.post(f"{t}/receipts", json=receipt), "POST", f"{t}/receipts")  # 200
    await check(await api.patch(f"{t}/links/4242", json={"receipts": False}), "PATCH", user)
    cursor = f"{t}/receipts/cursor"
    await check(await api.get(cursor), "GET", cursor)
    await check(await api.request("PUT", cursor, json={"cursor": 3}), "PUT", cursor)
    remind = {"customer_id": cid, "every_days": 3}
    sent = await check(await api.post(f"{t}/reminders", json=remind), "POST", f"{t}/reminders")
    await check(await api.post(f"{t}/reminders", json=remind), "POST", f"{t}/reminders")  # 409
    await check(await api.get(f"{t}/overdue"), "GET", f"{t}/overdue")
    message = f"{t}/messages/{{id}}"
    await check(await api.delete(message.format(id=sent["message_id"])), "DELETE", message)
    await check(await api.delete(f"{t}/links/4242"), "DELETE", user)


# -- inputs: every documented constraint is enforced, nothing undocumented is accepted -------

# A value of each JSON type, to break a `type`.
SAMPLES: list[Any] = ["x", 7, 1.5, True, None, [], {}]
# Strings to break a pattern with: each one a pattern refuses is sent.
BREAKERS = ["", " ", "x", "!", "\x00", "a\x00b", "ab", "+12+34", "1234", "1" * 21, "x" * 41,
            "x" * 51, "x" * 201, "x" * 501, "x" * 2001, "a" * 250 + "@example.com",
            "2025-05-18T10:00", "usdx", "asc!", "a\x1fb", "ключ"]  # fmt: skip
# The keywords a parameter or property may use; another one fails the test until it is
# taught here how to break it.
KEYWORDS = {"type", "minimum", "maximum", "enum", "pattern", "allOf", "maxItems", "items",
            "maxLength", "format", "description", "default", "anyOf", "const"}  # fmt: skip


def resolve(schema: dict) -> dict:
    if "$ref" in schema:
        return DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def breaking(schema: dict) -> list[tuple[str, Any]]:
    """(constraint, value) for each constraint of `schema`: a value the document refuses
    because of it. Every constraint gets one."""
    assert set(schema) <= KEYWORDS, set(schema) - KEYWORDS
    found: list[tuple[str, Any]] = []
    for branch in schema.get("anyOf", []):
        found += [pair for pair in breaking(branch) if pair[0] != "const"]
    if "type" in schema:
        kinds = validator({"type": schema["type"]})
        found += [("type", value) for value in SAMPLES if not kinds.is_valid(value)]
    if "minimum" in schema:
        found.append(("minimum", schema["minimum"] - 1))
    if "maximum" in schema:
        found.append(("maximum", schema["maximum"] + 1))
    if "enum" in schema:
        found.append(("enum", "bogus"))
    if "maxLength" in schema:
        found.append(("maxLength", "x" * (schema["maxLength"] + 1)))
    for part in (schema, *schema.get("allOf", [])):
        if "pattern" in part:
            pattern = ecma(part["pattern"])
            found += [("pattern", text) for text in BREAKERS if not pattern.search(text)]
    if "maxItems" in schema:
        found.append(("maxItems", [f"t{i}" for i in range(schema["maxItems"] + 1)]))
    if "items" in schema:
        found += [("items", [value]) for _, value in breaking(schema["items"])]
    whole = validator(schema)
    found = [(constraint, value) for constraint, value in found if not whole.is_valid(value)]
    kept = {constraint for constraint, _ in found}
    expected = set(schema) - {"format", "description", "default", "anyOf", "const", "allOf"}
    if "anyOf" in schema:
        expected |= {k for branch in schema["anyOf"] for k in branch} - {"const"}
    assert expected <= kept | {"format"}, (schema, expected - kept)
    return found


def as_query(value: Any) -> str | None:
    """How a value travels in a query string; None where it cannot."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return None
    return str(value)


def query_value(schema: dict, text: str) -> Any:
    """A query string's text as the parameter's schema reads it: digits are a number where
    it takes numbers, else text."""
    numeric = any(branch.get("type") == "integer" for branch in [schema, *schema.get("anyOf", [])])
    return int(text) if numeric and re.fullmatch(r"-?[0-9]+", text) else text


def operations() -> list[tuple[str, str, dict]]:
    return [(method, path, operation) for path, item in DOCUMENT["paths"].items()
            for method, operation in item.items()]  # fmt: skip


def request_body(operation: dict) -> tuple[dict, dict]:
    """The schema of an operation's body as documented (with components), and the object
    schema it refers to (an optional body's is `{anyOf: [object, null]}`)."""
    content = operation["requestBody"]["content"]["application/json"]["schema"]
    whole = {**content, "components": DOCUMENT["components"]}
    return whole, resolve(content["anyOf"][0] if "anyOf" in content else content)


async def refused(response, name: str, where: str) -> None:
    """A 400 or 422 problem that names `name` among its errors."""
    body = await problem(response)
    assert response.status in (400, 422), (where, response.status, body)
    assert name in error_fields(body), (where, name, body)


async def contract_ids(api) -> dict[str, str]:
    """A customer with points and a balance, a cash sale of theirs, a payment of theirs;
    they owe and their Telegram account is linked. Two more customers' invite codes."""
    customer = await api.customer("Contract Customer")
    sale = await api.sale(customer["id"], 10000)
    entry = await api.pay(customer["id"], 500)
    await api.ok("POST", f"{CUSTOMERS}/{customer['id']}/ledger", 201,
                 json={"type": "debit", "amount": 1000})  # fmt: skip
    codes = []
    for name in ("Contract Customer", "Contract Friend", "Contract Neighbour"):
        who = customer if name == "Contract Customer" else await api.customer(name)
        invite = await api.ok("POST", f"{CUSTOMERS}/{who['id']}/telegram/invite", 201)
        codes.append(invite["code"])
    await api.ok("POST", "/api/v1/telegram/links", 201,
                 json={"code": codes[0], "telegram_user_id": 4242})  # fmt: skip
    return {"id": customer["id"], "sale": sale["id"], "entry_id": entry["id"],
            "telegram_user_id": "4242", "check_code": codes[1], "link_code": codes[2]}


def base_bodies(ids: dict[str, str]) -> dict[str, Any]:
    """A valid body for each operation that takes one."""
    return {
        "createCustomer": {"name": "Contract"},
        "updateCustomer": {"notes": "n"},
        "updateCustomerWithPut": {"notes": "n"},
        "recordPaymentOrDebit": {"type": "credit", "amount": 100},
        "reverseLedgerEntry": {},
        "redeemPoints": {"points": 1},
        "recordSale": {"customer_id": ids["id"], "total": 100, "payment_method": "cash"},
        "refundSale": {"amount": 1},
        "updateSettings": {"point_value": 10},
        "createTelegramInvite": {"relink": True},
        "checkTelegramInvite": {"code": ids["check_code"]},
        "linkTelegramAccount": {"code": ids["link_code"], "telegram_user_id": 4343},
        "updateTelegramLink": {"receipts": True},
        "setReceiptsCursor": {"cursor": 0},
        "claimReceipt": {"change_id": ids["entry_id"]},
        "claimReminder": {"customer_id": ids["id"], "every_days": 3},
    }


def concrete(path: str, operation: dict, ids: dict[str, str], **swap: str) -> str:
    """The operation's path with real ids (or `swap`'s values)."""
    sale = operation["operationId"] in ("getSale", "refundSale")
    values = {"id": ids["sale"] if sale else ids["id"], "entry_id": ids["entry_id"],
              "telegram_user_id": ids["telegram_user_id"], **swap}  # fmt: skip
    return re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)


async def send(api, method: str, path: str, body: Any = ..., **kw: Any):
    if body is ...:
        return await api.request(method.upper(), path, **kw)
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return await api.request(method.upper(), path, data=json.dumps(body), headers=headers, **kw)


async def test_every_documented_body_constraint_is_enforced(api):
    """Each property of each request body, each of its constraints broken in turn on a body
    that is otherwise valid: 422 naming the property. A required property left out, an
    unknown one added, a body of another type or an empty partial update: refused too."""
    ids = await contract_ids(api)
    bases = base_bodies(ids)
    tried: set[tuple[str, str]] = set()
    for method, template, operation in operations():
        if "requestBody" not in operation:
            continue
        name, path = operation["operationId"], concrete(template, operation, ids)
        whole, schema = request_body(operation)
        base = bases[name]
        assert validator(schema).is_valid(base), name
        ok = await send(api, method, path, base)
        assert ok.status < 300, (name, ok.status, await ok.text())
        for prop, prop_schema in schema["properties"].items():
            for constraint, value in breaking(prop_schema):
                await refused(await send(api, method, path, {**base, prop: value}), prop,
                              f"{name} {prop} {constraint} {value!r:.40}")  # fmt: skip
                tried.add((name, prop))
        for prop in schema.get("required", []):
            missing = {k: v for k, v in base.items() if k != prop}
            await refused(await send(api, method, path, missing), prop, f"{name} no {prop}")
        assert schema["additionalProperties"] is False, name
        await refused(await send(api, method, path, {**base, "extra": 1}), "extra", name)
        for other in ([], "x", 1, *([] if operation["requestBody"]["required"] is False
                                    else [None])):  # fmt: skip
            assert not validator(whole).is_valid(other)
            await refused(await send(api, method, path, other), "body", f"{name} {other!r}")
        if schema.get("minProperties"):
            await refused(await send(api, method, path, {}), "body", f"{name} empty")
        else:
            assert not operation["requestBody"]["required"] or schema.get("required"), name
    documented = {(op["operationId"], prop) for _, _, op in operations() if "requestBody" in op
                  for prop in request_body(op)[1]["properties"]}  # fmt: skip
    assert tried == documented


async def test_every_documented_parameter_constraint_is_enforced(api):
    """Query parameters, path ids and the Idempotency-Key header: each constraint broken in
    turn, the rest of the request valid: 400 or 422 naming the parameter."""
    ids = await contract_ids(api)
    bases = base_bodies(ids)
    tried: set[tuple[str, str]] = set()
    for method, template, operation in operations():
        name = operation["operationId"]
        body = bases.get(name, ...)
        for parameter in operation.get("parameters", []):
            label, where = parameter["name"], parameter["in"]
            for constraint, value in breaking(parameter["schema"]):
                text = as_query(value)
                schema = parameter["schema"]
                if text is None or validator(schema).is_valid(query_value(schema, text)):
                    continue  # cannot travel as text, or reads as valid text
                if where == "query":
                    response = await send(api, method, concrete(template, operation, ids), body,
                                          params={label: text})  # fmt: skip
                elif where == "path":
                    if "/" in text or "?" in text or "#" in text or text in ("", "."):
                        continue  # another route, or none
                    path = concrete(template, operation, ids, **{label: text})
                    response = await send(api, method, path, body)
                else:
                    try:
                        response = await send(api, method, concrete(template, operation, ids),
                                              body, headers={label: text})  # fmt: skip
                    except ValueError:
                        continue  # no HTTP client sends it
                await refused(response, label, f"{name} {label} {constraint} {text!r:.40}")
                tried.add((name, label))
    documented = {(op["operationId"], p["name"]) for _, _, op in operations()
                  for p in op.get("parameters", [])}  # fmt: skip
    assert tried == documented


async def test_every_operation_has_an_id_and_a_tag_in_the_shops_words():
    operations_ = [operation for _, _, operation in operations()]
    ids = [operation["operationId"] for operation in operations_]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), operation_id
    tags = [tag["name"] for tag in DOCUMENT["tags"]]
    used = [operation["tags"] for operation in operations_]
    assert all(len(t) == 1 and t[0] in tags for t in used)
    assert {t[0] for t in used} == set(tags)
    for name in ("createCustomer", "recordPaymentOrDebit", "redeemPoints", "recordSale",
                 "refundSale", "reverseLedgerEntry", "listCustomers", "updateSettings"):
        assert name in ids, name
