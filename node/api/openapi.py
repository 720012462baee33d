"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

A contract test checks that every registered route is described here and that real
responses validate against the schemas, so this file cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.money import CURRENCY_EXPONENTS, MAX_AMOUNT

routes = web.RouteTableDef()

STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
AMOUNT = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT, "description": "minor units"}
COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT}

# Text fields are trimmed before they are checked (node.validation.text), so a pattern, not
# minLength/maxLength, says what is accepted: surrounding whitespace (Python's str.isspace,
# spelled out so the class means the same in ECMA-262 and Python regexes) is free, the
# trimmed text has a length limit and no NUL characters.
WS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def trimmed(max_len: int, required: bool = False, nul: bool = False) -> dict[str, Any]:
    """A string that is at most `max_len` characters once trimmed; empty (or only
    whitespace) is stored as null unless `required`. NUL characters only where `nul`."""
    edge = f"[^{WS}]" if nul else f"[^{WS}\\x00]"
    inner = r"[\s\S]" if nul else r"[^\x00]"
    core = f"{edge}(?:{inner}{{0,{max_len - 2}}}{edge})?"
    pattern = f"^[{WS}]*{core if required else f'(?:{core})?'}[{WS}]*$"
    extra = "" if required else "; empty or only whitespace means null"
    return {"type": "string", "pattern": pattern,
            "description": f"trimmed; at most {max_len} characters{extra}"}  # fmt: skip


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


# node.validation.email: trimmed, then local@domain.tld with no whitespace; empty is null.
EMAIL_CHAR = f"[^@{WS}\\x00]"
EMAIL = {
    "type": ["string", "null"],
    "pattern": f"^[{WS}]*(?:{EMAIL_CHAR}+@{EMAIL_CHAR}+\\.[^@.{WS}\\x00]{{2,}})?[{WS}]*$",
    "description": "an address like jane@example.com (at most 254 characters once trimmed; "
    "the domain is lower-cased); empty or only whitespace means null",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: list[str] | None = None, closed: bool = True) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = list(props) if required is None else required
    if closed:
        schema["additionalProperties"] = False
    return schema


CUSTOMER_PROPS = {
    "id": UUID,
    "name": STR,
    "email": NSTR,
    "phone": {**NSTR, "description": "normalized: a leading + and digits"},
    "address": NSTR,
    "loyalty_points": INT,
    "total_spent": INT,
    "total_orders": INT,
    "notes": NSTR,
    "tags": {"type": "array", "items": STR},
    "credit_limit": {"type": ["integer", "null"], "description": "null: the shop default"},
    "ledger_balance": {"type": "integer", "description": "negative when the customer owes"},
    "created_at": TIME,
    "updated_at": TIME,
}
PURCHASE = obj({"id": UUID, "receipt_number": STR, "total": INT, "created_at": TIME})
CUSTOMER_FIELDS = {
    "name": trimmed(200, required=True),
    "email": EMAIL,
    "phone": {**NSTR, "description": "digits with spaces, + ( ) - . / (a + only first), "
              "4 to 20 digits, at most 40 characters; stored as + and digits"},
    "address": nullable(trimmed(500)),
    "notes": nullable(trimmed(2000)),
    "tags": {"type": "array", "maxItems": 20, "description": "duplicates are dropped",
             "items": trimmed(50, required=True, nul=True)},
    "credit_limit": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_AMOUNT},
}
CUSTOMER_INPUT = obj(CUSTOMER_FIELDS, required=["name"])
# PATCH (and PUT, the same): any of the fields, at least one.
CUSTOMER_UPDATE = {**obj(CUSTOMER_FIELDS, required=[]), "minProperties": 1}
ENTRY = obj({
    "id": UUID,
    "type": {"enum": ["credit", "debit"]},
    "amount": INT,
    "balance_after": INT,
    "description": STR,
    "reference_id": {"type": ["string", "null"], "format": "uuid"},
    "reverses_id": {"type": ["string", "null"], "format": "uuid"},
    "created_at": TIME,
})  # fmt: skip
REFUND_PROPS = {
    "id": UUID,
    "amount": INT,
    "points_reversed": INT,
    "points_shortfall": {**INT, "description": "points that could not be reversed"},
    "points_restored": INT,
    "created_at": TIME,
}
SALE = obj({
    "id": UUID,
    "customer_id": UUID,
    "receipt_number": STR,
    "total": INT,
    "discount_amount": INT,
    "amount_paid": {**INT, "description": "total - discount_amount - refunded_amount"},
    "payment_method": {"enum": ["cash", "card", "account"]},
    "points_earned": INT,
    "points_redeemed": INT,
    "refunded_amount": INT,
    "points_reversed": INT,
    "points_restored": INT,
    "refunds": {"type": "array", "items": obj(REFUND_PROPS)},
    "created_at": TIME,
})  # fmt: skip
SETTINGS_FIELDS = {
    "earn_rate": {"type": "number", "minimum": 0, "maximum": 1000,
                  "description": "points per major unit, at most 4 decimals"},
    "point_value": {"type": "integer", "minimum": 0, "maximum": 1_000_000,
                    "description": "minor units per point"},
    "default_credit_limit": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_AMOUNT},
    "currency": {"type": "string", "description": "ISO 4217 code; any case on input"},
}  # fmt: skip
BUCKETS = obj({k: INT for k in ("0-30", "31-60", "61-90", "90+")})
PROBLEM = obj({
    "type": STR,
    "title": STR,
    "status": INT,
    "detail": STR,
    "errors": {"type": "array", "items": obj({"field": STR, "message": STR})},
}, required=["type", "title", "status", "detail"], closed=False)  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Customer": obj(CUSTOMER_PROPS),
    "CustomerDetail": obj({**CUSTOMER_PROPS,
                           "recent_purchases": {"type": "array", "items": PURCHASE}}),
    "CustomerInput": CUSTOMER_INPUT,
    "CustomerUpdate": CUSTOMER_UPDATE,
    "LedgerEntry": ENTRY,
    "LedgerEntryInput": obj({
        "type": {"enum": ["credit", "debit"]},
        "amount": AMOUNT,
        "description": nullable(trimmed(500)),
        "reference_id": {"type": ["string", "null"], "format": "uuid"},
        "override_credit_limit": {"type": "boolean", "description": "owner only"},
    }, required=["type", "amount"]),
    "RedeemInput": obj({"points": {**COUNT, "minimum": 1},
                        "sale_id": {"type": ["string", "null"], "format": "uuid"}},
                       required=["points"]),
    "Redemption": obj({"redeemed": INT, "discount_amount": INT, "remaining_points": INT}),
    "Sale": SALE,
    "SaleInput": obj({
        "customer_id": UUID,
        "total": AMOUNT,
        "payment_method": {"enum": ["cash", "card", "account"]},
        "redeem_points": COUNT,
        "receipt_number": {**nullable(trimmed(50, required=True)),
                           "description": "trimmed, 1 to 50 characters; null or absent: "
                                          "REC-YYYYMMDD-NNN"},
        "override_credit_limit": {"type": "boolean", "description": "owner only"},
    }, required=["customer_id", "total", "payment_method"]),
    # null, like no body at all, refunds in full.
    "RefundInput": {**obj({"amount": AMOUNT}, required=[]), "type": ["object", "null"]},
    "Refund": obj({**REFUND_PROPS, "sale_id": UUID, "sale": ref("Sale")}),
    "Settings": obj({**SETTINGS_FIELDS, "currency_decimals": {
        "type": "integer", "minimum": 0, "maximum": max(CURRENCY_EXPONENTS.values()),
        "description": "read-only: the decimals of the currency's minor unit (USD 2, JPY 0, "
                       "KWD 3), which every amount counts in"}}),
    "SettingsInput": {**obj(SETTINGS_FIELDS, required=[]), "minProperties": 1},
    "Receivables": obj({
        "currency": STR,
        "total_owed": INT,
        "customers_owing": INT,
        "buckets": BUCKETS,
        "customers": {"type": "array", "items": obj({
            "id": UUID, "name": STR, "phone": NSTR, "owed": INT,
            "oldest_unpaid_at": {"type": ["string", "null"], "format": "date-time"},
            "age_days": INT, "bucket": STR, "buckets": BUCKETS,
        })},
    }),
    "LoyaltyReport": obj({
        "currency": STR, "point_value": INT, "points_outstanding": INT,
        "outstanding_value": INT, "from": {"type": ["string", "null"]},
        "to": {"type": ["string", "null"], "description": "exclusive upper bound"},
        "points_earned": INT, "points_redeemed": INT, "points_reversed_by_refunds": INT,
        "points_restored_by_refunds": INT, "points_adjusted": INT,
    }),
    "SyncStatus": obj({
        "enabled": {"type": "boolean"}, "origin": STR, "push_queue_depth": INT,
        "oldest_unsent_age_seconds": {"type": ["number", "null"]}, "push_acked_seq": INT,
        "pull_cursor": INT, "pull_lag": {"type": ["integer", "null"]},
        "pull_epoch": {"type": ["string", "null"],
                       "description": "central's history the pull cursor belongs to"},
        "pending": {"type": "integer", "description": "others' changes waiting for a "
                    "prerequisite (a customer, sale or entry not yet here, or our clock)"},
        "oldest_pending_age_seconds": {"type": ["number", "null"]},
        "last_success_at": {"type": ["string", "null"]},
        "last_attempt_at": {"type": ["string", "null"]},
        "last_error": {"type": ["string", "null"]},
        "central_high": {"type": ["integer", "null"]}, "running": {"type": "boolean"},
        "reports": {"type": "object", "additionalProperties": INT,
                    "description": "counts by kind: conflict, quarantined, clock_ahead, "
                                   "double_reversal, over_refund, receipt_reused, "
                                   "points_below_zero, credit_limit_exceeded"},
        "recent_reports": {"type": "array", "items": obj({
            "kind": STR, "change_id": NSTR, "detail": STR, "created_at": TIME})},
    }, required=["enabled", "origin", "push_queue_depth", "oldest_unsent_age_seconds",
                 "push_acked_seq", "pull_cursor", "reports", "recent_reports"]),
    "Message": obj({"message": STR}),
    "Health": obj({"status": {"const": "ok"}, "version": STR, "uptime_seconds": {"type": "number"},
                   "sync": ref("ComponentHealth"), "bot": ref("ComponentHealth")},
                  required=["status", "version", "uptime_seconds"]),
    "ComponentHealth": obj({"healthy": {"type": "boolean"},
                            "lag_seconds": {"type": ["number", "null"]}}),
    "Problem": PROBLEM,
}  # fmt: skip


def param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}  # fmt: skip


def query_int(lo: int, hi: int, default: int) -> dict[str, Any]:
    """A whole number in ASCII digits (node.api.params.query_int); empty means the default."""
    return {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi}, {"const": ""}],
            "default": default}  # fmt: skip


ID = param("id", "path", UUID, "customer id", required=True)
PAGE = param("page", "query", query_int(1, 1_000_000, 1), "page number")


def limit(default: int) -> dict:
    return param("limit", "query", query_int(1, 100, default), "items per page (at most 100)")


PERIOD = [
    param("from", "query", STR, "inclusive start: a date (2025-05-18) or RFC 3339 time; "
          "empty: none"),
    param("to", "query", STR, "inclusive end: a date (whole day) or RFC 3339 time; empty: none"),
]
IDEMPOTENCY = param("Idempotency-Key", "header",
                    {"type": "string", "minLength": 1, "maxLength": 255},
                    "a retry with the same key and body returns the first response")  # fmt: skip

LIST_HEADERS = {
    "X-Total-Count": {"schema": INT, "description": "matching items in all pages"},
    "Link": {"schema": STR, "description": 'RFC 8288 rel="next" / rel="prev"'},
}


def ok(schema: dict, status: int = 200, desc: str = "OK", headers: dict | None = None) -> dict:
    response: dict[str, Any] = {
        "description": desc, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return {str(status): response, **ERRORS}


ERRORS = {
    str(code): {"description": text,
                "content": {"application/problem+json": {"schema": ref("Problem")}}}
    for code, text in [(400, "bad request"), (401, "missing or invalid token"),
                       (403, "role may not do this"), (404, "not found"),
                       (408, "the body did not arrive in time"),
                       (409, "conflict (credit limit, points, duplicate)"), (413, "body too large"),
                       (422, "validation failed")]
}  # fmt: skip
ERRORS["429"] = {
    **ERRORS["409"], "description": "too many failed authentications from this address",
    "headers": {"Retry-After": {"schema": INT, "description": "seconds"}},
}


def body(name: str, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


def op(summary: str, responses: dict, params: list | None = None, request: dict | None = None,
       security: bool = True) -> dict:  # fmt: skip
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if request:
        operation["requestBody"] = request
    if not security:
        operation["security"] = []
    return operation


def listing(name: str) -> dict:
    return {"type": "array", "items": ref(name)}


SEARCH = [
    param("search", "query", {"type": "string", "pattern": "^[^\\x00-\\x1f]*$"},
          "name, email or phone substring (phone ignores formatting); only the first 200 "
          "characters count; no control characters"),
    param("sort", "query", {"enum": ["", "name", "created_at", "total_spent", "loyalty_points"],
                            "default": "created_at"}, "sort field; empty: the default"),
    param("order", "query", {"type": "string", "pattern": "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$"},
          "ASC or DESC, any case; empty or absent: ASC for name, else DESC"),
]  # fmt: skip
ENTRY_ID = param("entry_id", "path", UUID, "ledger entry id", required=True)
SALE_ID = param("id", "path", UUID, "sale id", required=True)

PATHS = {
    "/healthz": {"get": op("Liveness, sync and bot state", ok(ref("Health")), security=False)},
    "/api/v1/openapi.json": {"get": op("This document", ok({"type": "object"}), security=False)},
    "/api/v1/customers": {
        "get": op("List customers", ok(listing("Customer"), headers=LIST_HEADERS),
                  [PAGE, limit(20), *SEARCH]),
        "post": op("Create a customer", ok(ref("Customer"), 201, "Created"),
                   request=body("CustomerInput")),
    },
    "/api/v1/customers/{id}": {
        "get": op("Get a customer with recent purchases and ledger balance",
                  ok(ref("CustomerDetail")), [ID]),
        "patch": op("Update a customer (partial; tags replaced)", ok(ref("CustomerDetail")), [ID],
                    body("CustomerUpdate")),
        "put": op("Same as PATCH", ok(ref("CustomerDetail")), [ID], body("CustomerUpdate")),
        "delete": op("Delete (or anonymize when it has history); owner only",
                     ok(ref("Message")), [ID]),
    },
    "/api/v1/customers/{id}/ledger": {
        "get": op("Ledger entries, newest first, with running balance",
                  ok(listing("LedgerEntry"), headers=LIST_HEADERS),
                  [ID, *PERIOD, PAGE, limit(50)]),
        "post": op("Record a payment (credit) or a manual debit (owner only)",
                   ok(ref("LedgerEntry"), 201, "Created"), [ID, IDEMPOTENCY],
                   body("LedgerEntryInput")),
    },
    "/api/v1/customers/{id}/ledger/{entry_id}/reverse": {
        "post": op("Reverse an entry once (owner only)", ok(ref("LedgerEntry"), 201, "Created"),
                   [ID, ENTRY_ID, IDEMPOTENCY]),
    },
    "/api/v1/customers/{id}/loyalty/redeem": {
        "post": op("Redeem points", ok(ref("Redemption")), [ID, IDEMPOTENCY],
                   body("RedeemInput")),
    },
    "/api/v1/customers/{id}/sales": {
        "get": op("A customer's sales, newest first",
                  ok(listing("Sale"), headers=LIST_HEADERS), [ID, PAGE, limit(20)]),
    },
    "/api/v1/sales": {
        "post": op("Record a sale", ok(ref("Sale"), 201, "Created"), [IDEMPOTENCY],
                   body("SaleInput")),
    },
    "/api/v1/sales/{id}": {"get": op("Get a sale with its refunds", ok(ref("Sale")), [SALE_ID])},
    "/api/v1/sales/{id}/refund": {
        "post": op("Refund a sale: no body = full, {amount} = partial",
                   ok(ref("Refund"), 201, "Created"), [SALE_ID, IDEMPOTENCY],
                   body("RefundInput", required=False)),
    },
    "/api/v1/settings": {
        "get": op("Vendor settings", ok(ref("Settings"))),
        "patch": op("Change vendor settings (owner only)", ok(ref("Settings")),
                    request=body("SettingsInput")),
    },
    "/api/v1/reports/receivables": {
        "get": op("Who owes what, with ageing buckets", ok(ref("Receivables")),
                  [param("limit", "query", query_int(1, 1000, 100), "customers listed")]),
    },
    "/api/v1/sync/status": {
        "get": op("Sync: last success, queue depth, oldest unsent, pull lag, conflicts",
                  ok(ref("SyncStatus"))),
    },
    "/api/v1/reports/loyalty": {
        "get": op("Points outstanding and moved in a period", ok(ref("LoyaltyReport")), PERIOD),
    },
}  # fmt: skip

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "shopnode customers API",
        "version": "1",
        "description": "Customers, loyalty points and the customer ledger (khata) of one "
        "shop. Money is integer minor units; times are RFC 3339 UTC. Errors are RFC 9457 "
        "application/problem+json.",
    },
    "servers": [{"url": "/"}],
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
}


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(DOCUMENT)
