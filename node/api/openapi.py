"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json.

Request bodies and parameters are not written here: each is the declaration the route
validates with (node.validation.Body, node.api.params.Query), turned into its schema. The
responses are described here; a contract test checks that every registered route is
described, that real responses validate against the schemas and that every documented
input constraint is enforced, so this file cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import idempotency, settings
from node.api import customers, ledger, loyalty, reports, sales, telegram
from node.api import settings as settings_api
from node.api.params import Query
from node.customers import COUNT_CAP
from node.models import ENTRY_TYPES, PAYMENT_METHODS
from node.money import CURRENCY_EXPONENTS
from node.validation import UUID_SCHEMA, Body

routes = web.RouteTableDef()

STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
NTIME = {"type": ["string", "null"], "format": "date-time"}


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
ENTRY = obj({
    "id": UUID,
    "type": {"type": "string", "enum": list(ENTRY_TYPES)},
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
    "payment_method": {"type": "string", "enum": list(PAYMENT_METHODS)},
    "points_earned": INT,
    "points_redeemed": INT,
    "refunded_amount": INT,
    "points_reversed": INT,
    "points_restored": INT,
    "refunds": {"type": "array", "items": obj(REFUND_PROPS)},
    "created_at": TIME,
})  # fmt: skip
BUCKETS = obj({k: INT for k in ("0-30", "31-60", "61-90", "90+")})
PROBLEM = obj({
    "type": STR,
    "title": STR,
    "status": INT,
    "detail": STR,
    "errors": {"type": "array", "items": obj({"field": STR, "message": STR})},
}, required=["type", "title", "status", "detail"], closed=False)  # fmt: skip

# Every request body, each the declaration its route validates with.
INPUTS: tuple[Body, ...] = (
    customers.CUSTOMER_INPUT,
    customers.CUSTOMER_UPDATE,
    ledger.ENTRY_INPUT,
    ledger.REVERSE_INPUT,
    loyalty.REDEEM_INPUT,
    sales.SALE_INPUT,
    sales.REFUND_INPUT,
    settings_api.SETTINGS_INPUT,
    telegram.INVITE_INPUT,
    telegram.CODE_INPUT,
    telegram.LINK_INPUT,
    telegram.LINK_UPDATE,
    telegram.CURSOR_INPUT,
    telegram.RECEIPT_INPUT,
    telegram.REMINDER_INPUT,
)
BOOL = {"type": "boolean"}
OWING = {"customer_id": UUID, "owed": {**INT, "description": "minor units owed"},
         "owing_since": {"type": ["string", "null"], "format": "date-time",
                         "description": "when the oldest unpaid debit was recorded"},
         "age_days": INT}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Customer": obj(CUSTOMER_PROPS),
    "CustomerDetail": obj({**CUSTOMER_PROPS,
                           "recent_purchases": {"type": "array", "items": PURCHASE}}),
    "LedgerEntry": ENTRY,
    "Redemption": obj({"redeemed": INT, "discount_amount": INT, "remaining_points": INT}),
    "Sale": SALE,
    "Refund": obj({**REFUND_PROPS, "sale_id": UUID, "sale": ref("Sale")}),
    # What PATCH takes, all of it, the currency's decimals and the shop's zone.
    "Settings": obj({
        **{name: field.schema for name, field in settings.FIELDS.items()},
        "currency_decimals": {
            "type": "integer", "minimum": 0, "maximum": max(CURRENCY_EXPONENTS.values()),
            "description": "read-only: the decimals of the currency's minor unit (USD 2, JPY "
                           "0, KWD 3), which every amount counts in"},
        "timezone": {
            "type": "string", "minLength": 1,
            "description": "read-only: the shop's IANA time zone ([node] timezone, else the "
                           "machine's); receipt numbers, date-only from/to and ageing count "
                           "its calendar days. Stored times stay UTC"},
    }),
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
    "Status": obj({
        "version": STR, "shop_name": STR,
        "timezone": {**STR, "description": "IANA zone of the shop's day"},
        "database_size_bytes": {**INT, "description": "the database file and its WAL"},
        "backup": obj({
            "last_at": {**NTIME, "description": "when the newest backup was taken"},
            "size_bytes": {"type": ["integer", "null"]},
            "file": {**NSTR, "description": "its file name in [backup] dir"},
            "every_hours": {"type": "number", "description": "0: not scheduled"},
            "next_at": NTIME,
            "last_error": {**NSTR, "description": "why the latest scheduled backup failed; "
                           "null once one succeeds"},
            "last_error_at": NTIME,
        }),
        "sync": obj({
            "enabled": {"type": "boolean"}, "last_success_at": NSTR, "last_error": NSTR,
            "push_queue_depth": INT, "oldest_unsent_age_seconds": {"type": ["number", "null"]},
            "pull_lag": {"type": ["integer", "null"]}, "pending": INT,
            "reports": {"type": "object", "additionalProperties": INT},
        }, required=["enabled", "push_queue_depth", "pending", "reports"]),
    }),
    "Message": obj({"message": STR}),
    "Health": obj({"status": {"const": "ok"}, "version": STR, "uptime_seconds": {"type": "number"},
                   "sync": ref("ComponentHealth"), "bot": ref("ComponentHealth")},
                  required=["status", "version", "uptime_seconds"]),
    "ComponentHealth": obj({"healthy": {"type": "boolean"},
                            "lag_seconds": {"type": ["number", "null"]}}),
    "Problem": PROBLEM,
    "Event": obj({
        "cursor": {**INT, "description": "the event's place in the feed; pass it as `after`"},
        "id": UUID, "kind": {**STR, "description": "customer.created, sale.recorded, "
                             "ledger.credit, ... (the change log's kinds)"},
        "entity_id": STR, "origin": STR, "origin_seq": INT, "recorded_at": TIME,
        "body": {"type": "object", "description": "the facts of the change; a deleted or "
                 "anonymized customer's personal fields are blanked"},
    }),
    "Events": obj({"events": {"type": "array", "items": ref("Event")},
                   "next_cursor": {**INT, "description": "pass as `after` for the next page"},
                   "head": {**INT, "description": "the newest event's cursor"}}),
    "TelegramInvite": obj({"code": STR, "customer_id": UUID, "expires_at": TIME}),
    "TelegramInviteCheck": obj({"shop_name": STR, "phone_last_digits": NSTR}),
    "TelegramLink": obj({"customer_id": UUID, "telegram_user_id": INT, "receipts": BOOL,
                         "linked_at": TIME, "shop_name": STR}),
    "ReceiptsCursor": obj({"cursor": INT}),
    "ReceiptClaim": obj({
        "send": {**BOOL, "description": "false: no receipt is due, or it was claimed already"},
        "message_id": UUID, "telegram_user_id": INT, "kind": STR, "customer_id": UUID,
        "amount": INT, "points": INT, "receipt_number": NSTR, "created_at": TIME,
        "ledger_balance": INT, "loyalty_points": INT, "shop_name": STR,
    }, required=["send"]),
    "Reminder": obj({"message_id": UUID, "telegram_user_id": INT, "shop_name": STR, **OWING}),
    "Owing": obj(OWING),
    **{body.name: body.schema() for body in INPUTS},
}  # fmt: skip


def path_param(name: str, description: str) -> dict[str, Any]:
    """A UUID in the path (node.api.params.path_id)."""
    return {"name": name, "in": "path", "required": True, "schema": UUID_SCHEMA,
            "description": description}  # fmt: skip


def query(declared: tuple[Query, ...]) -> list[dict[str, Any]]:
    return [param.document() for param in declared]


ID = path_param("id", "customer id")
ENTRY_ID = path_param("entry_id", "ledger entry id")
SALE_ID = path_param("id", "sale id")
MESSAGE_ID = path_param("id", "a claimed receipt's or reminder's message_id")
TELEGRAM_USER = {"name": "telegram_user_id", "in": "path", "required": True,
                 "schema": telegram.TELEGRAM_ID_SCHEMA, "description": "a Telegram user id"}
IDEMPOTENCY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "maxLength": idempotency.MAX_KEY_LENGTH,
               "pattern": f"^{idempotency.KEY.pattern}$"},
    "description": "printable ASCII, not only spaces (a UUID will do); a retry with the same "
                   "key and body returns the first response and changes nothing; the same key "
                   "with another body is 422",
}  # fmt: skip

LIST_HEADERS = {
    "X-Total-Count": {"schema": INT, "description": "matching items in all pages"},
    "Link": {"schema": STR, "description": 'RFC 8288 rel="next" / rel="prev"'},
}
# A search counts matching customers only up to COUNT_CAP (node.customers.list_customers).
CUSTOMER_LIST_HEADERS = {
    **LIST_HEADERS,
    "X-Total-Count": {
        "schema": INT,
        "description": f"matching customers in all pages; for a search at most {COUNT_CAP}, "
                       f"which with X-Total-Count-Capped means more than {COUNT_CAP} match",
    },
    "X-Total-Count-Capped": {
        "schema": {"type": "string", "const": "true"},
        "description": f"sent only when more than {COUNT_CAP} customers match a search: "
                       f"X-Total-Count is then {COUNT_CAP}, not the number of matches; "
                       'rel="next" is sent while a later page holds customers',
    },
}  # fmt: skip


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


def body(declared: Body) -> dict[str, Any]:
    """The request body of an operation: the component of the Body its route parses (or
    null, or nothing, where the body is optional)."""
    schema = ref(declared.name)
    if declared.optional:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {"required": not declared.optional,
            "content": {"application/json": {"schema": schema}}}  # fmt: skip


def op(operation_id: str, tag: str, summary: str, responses: dict, params: list | None = None,
       request: Body | None = None, security: bool = True) -> dict:  # fmt: skip
    operation: dict[str, Any] = {
        "operationId": operation_id, "tags": [tag], "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if request:
        operation["requestBody"] = body(request)
    if not security:
        operation["security"] = []
    return operation


def listing(name: str) -> dict:
    return {"type": "array", "items": ref(name)}


TAGS = [
    {"name": "customers", "description": "profiles, search, delete or anonymize"},
    {"name": "ledger", "description": "the khata: payments in, debits, reversals"},
    {"name": "loyalty", "description": "redeeming points"},
    {"name": "sales", "description": "purchases and refunds"},
    {"name": "settings", "description": "earn rate, point value, credit limit, currency"},
    {"name": "reports", "description": "receivables and loyalty points"},
    {"name": "sync", "description": "the node's sync with central"},
    {"name": "events", "description": "the node's facts in commit order, for integrations"},
    {"name": "telegram", "description": "customers' own Telegram links, receipts, reminders "
                                        "(the bot's work)"},
    {"name": "status", "description": "the node at a glance: database, backups, sync"},
    {"name": "health", "description": "liveness, without a token"},
    {"name": "openapi", "description": "this document, without a token"},
]

PATHS = {
    "/healthz": {"get": op("getHealth", "health", "Liveness, sync and bot state",
                           ok(ref("Health")), security=False)},
    "/api/v1/openapi.json": {"get": op("getOpenApiDocument", "openapi", "This document",
                                       ok({"type": "object"}), security=False)},
    "/api/v1/customers": {
        "get": op("listCustomers", "customers", "List and search customers",
                  ok(listing("Customer"), headers=CUSTOMER_LIST_HEADERS),
                  query(customers.LIST_QUERY)),
        "post": op("createCustomer", "customers", "Create a customer",
                   ok(ref("Customer"), 201, "Created"), request=customers.CUSTOMER_INPUT),
    },
    "/api/v1/customers/{id}": {
        "get": op("getCustomer", "customers",
                  "Get a customer with recent purchases and ledger balance",
                  ok(ref("CustomerDetail")), [ID]),
        "patch": op("updateCustomer", "customers", "Update a customer (partial; tags replaced)",
                    ok(ref("CustomerDetail")), [ID], customers.CUSTOMER_UPDATE),
        "put": op("updateCustomerWithPut", "customers", "Same as PATCH (a partial update)",
                  ok(ref("CustomerDetail")), [ID], customers.CUSTOMER_UPDATE),
        "delete": op("deleteCustomer", "customers",
                     "Delete (or anonymize when it has history); owner only",
                     ok(ref("Message")), [ID]),
    },
    "/api/v1/customers/{id}/ledger": {
        "get": op("listLedgerEntries", "ledger",
                  "Ledger entries, newest first, with running balance",
                  ok(listing("LedgerEntry"), headers=LIST_HEADERS),
                  [ID, *query(ledger.LEDGER_QUERY)]),
        "post": op("recordPaymentOrDebit", "ledger",
                   "Record a payment received (credit) or a manual debit (owner only)",
                   ok(ref("LedgerEntry"), 201, "Created"), [ID, IDEMPOTENCY], ledger.ENTRY_INPUT),
    },
    "/api/v1/customers/{id}/ledger/{entry_id}/reverse": {
        "post": op("reverseLedgerEntry", "ledger", "Reverse an entry once (owner only)",
                   ok(ref("LedgerEntry"), 201, "Created"), [ID, ENTRY_ID, IDEMPOTENCY],
                   ledger.REVERSE_INPUT),
    },
    "/api/v1/customers/{id}/loyalty/redeem": {
        "post": op("redeemPoints", "loyalty", "Redeem points for a discount",
                   ok(ref("Redemption")), [ID, IDEMPOTENCY], loyalty.REDEEM_INPUT),
    },
    "/api/v1/customers/{id}/sales": {
        "get": op("listCustomerSales", "sales", "A customer's sales, newest first",
                  ok(listing("Sale"), headers=LIST_HEADERS), [ID, *query(sales.SALES_QUERY)]),
    },
    "/api/v1/sales": {
        "post": op("recordSale", "sales", "Record a sale (cash, card or on account)",
                   ok(ref("Sale"), 201, "Created"), [IDEMPOTENCY], sales.SALE_INPUT),
    },
    "/api/v1/sales/{id}": {
        "get": op("getSale", "sales", "Get a sale with its refunds", ok(ref("Sale")), [SALE_ID]),
    },
    "/api/v1/sales/{id}/refund": {
        "post": op("refundSale", "sales", "Refund a sale: no body = full, {amount} = partial",
                   ok(ref("Refund"), 201, "Created"), [SALE_ID, IDEMPOTENCY], sales.REFUND_INPUT),
    },
    "/api/v1/settings": {
        "get": op("getSettings", "settings", "Vendor settings", ok(ref("Settings"))),
        "patch": op("updateSettings", "settings", "Change vendor settings (owner only)",
                    ok(ref("Settings")), request=settings_api.SETTINGS_INPUT),
    },
    "/api/v1/reports/receivables": {
        "get": op("getReceivablesReport", "reports", "Who owes what, with ageing buckets",
                  ok(ref("Receivables")), query(reports.RECEIVABLES_QUERY)),
    },
    "/api/v1/reports/loyalty": {
        "get": op("getLoyaltyReport", "reports", "Points outstanding and moved in a period",
                  ok(ref("LoyaltyReport")), query(reports.LOYALTY_QUERY)),
    },
    "/api/v1/status": {
        "get": op("getStatus", "status",
                  "Version, shop, timezone, database size, last backup, sync (owner only)",
                  ok(ref("Status"))),
    },
    "/api/v1/sync/status": {
        "get": op("getSyncStatus", "sync",
                  "Sync: last success, queue depth, oldest unsent, pull lag, conflicts",
                  ok(ref("SyncStatus"))),
    },
    "/api/v1/events": {
        "get": op("listEvents", "events",
                  "Facts after a cursor, in commit order (owner or integration token)",
                  ok(ref("Events")), query(telegram.EVENTS_QUERY)),
    },
    "/api/v1/customers/{id}/telegram/invite": {
        "post": op("createTelegramInvite", "telegram",
                   "A one-time code linking the customer's Telegram account (7 days)",
                   ok(ref("TelegramInvite"), 201, "Created"), [ID], telegram.INVITE_INPUT),
    },
    "/api/v1/telegram/invites/check": {
        "post": op("checkTelegramInvite", "telegram",
                   "What a customer confirms before linking (owner only)",
                   ok(ref("TelegramInviteCheck")), request=telegram.CODE_INPUT),
    },
    "/api/v1/telegram/links": {
        "post": op("linkTelegramAccount", "telegram", "Use an invite code (owner only)",
                   ok(ref("TelegramLink"), 201, "Linked"), request=telegram.LINK_INPUT),
    },
    "/api/v1/telegram/links/{telegram_user_id}": {
        "get": op("getTelegramLink", "telegram", "The customer a Telegram account is linked to",
                  ok(ref("TelegramLink")), [TELEGRAM_USER]),
        "patch": op("updateTelegramLink", "telegram", "Receipts on or off",
                    ok(ref("TelegramLink")), [TELEGRAM_USER], telegram.LINK_UPDATE),
        "delete": op("unlinkTelegramAccount", "telegram", "Erase the link",
                     ok(ref("Message")), [TELEGRAM_USER]),
    },
    "/api/v1/telegram/receipts/cursor": {
        "get": op("getReceiptsCursor", "telegram", "Where the receipts left off in the feed",
                  ok(ref("ReceiptsCursor"))),
        "put": op("setReceiptsCursor", "telegram", "Receipts are handled up to here",
                  ok(ref("ReceiptsCursor")), request=telegram.CURSOR_INPUT),
    },
    "/api/v1/telegram/receipts": {
        "post": op("claimReceipt", "telegram", "Claim one change's receipt, once",
                   {**ok(ref("ReceiptClaim"), 201, "Claimed: send it"),
                    "200": ok(ref("ReceiptClaim"))["200"]}, request=telegram.RECEIPT_INPUT),
    },
    "/api/v1/telegram/reminders": {
        "post": op("claimReminder", "telegram",
                   "Claim a reminder: once per customer per every_days (409 otherwise)",
                   ok(ref("Reminder"), 201, "Claimed: send it"), request=telegram.REMINDER_INPUT),
    },
    "/api/v1/telegram/overdue": {
        "get": op("listOverdueCustomers", "telegram", "Linked customers who owe",
                  ok(listing("Owing")), query(telegram.OVERDUE_QUERY)),
    },
    "/api/v1/telegram/messages/{id}": {
        "delete": op("releaseTelegramMessage", "telegram",
                     "Release a claimed message that could not be delivered",
                     ok(ref("Message")), [MESSAGE_ID]),
    },
}  # fmt: skip

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "shopnode customers API",
        "version": "1",
        "description": "Customers, loyalty points and the customer ledger (khata) of one "
        "shop. Money is integer minor units, written as JSON integers (10000, not 10000.0); "
        "times are RFC 3339 UTC; text is valid Unicode (no lone surrogates). Errors are RFC "
        "9457 application/problem+json; a refused request names every field that is wrong.",
    },
    "servers": [{"url": "/"}],
    "tags": TAGS,
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
