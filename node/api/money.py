"""Money routes: ledger, loyalty redemption, sales, refunds, settings and reports."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import ledger, loyalty, reports, sales, settings
from node import validation as v
from node.api.auth import require_owner
from node.api.params import (
    idempotent,
    json_response,
    list_response,
    paging,
    path_id,
    query_int,
    read_json,
)
from node.periods import period

routes = web.RouteTableDef()

ENTRY_FIELDS: dict[str, v.Parser] = {
    "type": v.choice("credit", "debit"),
    "amount": v.amount,
    "description": v.nullable(v.text(max_len=500)),
    "reference_id": v.nullable(v.uuid),
    "override_credit_limit": v.boolean,
}
REDEEM_FIELDS: dict[str, v.Parser] = {"points": v.integer(minimum=1), "sale_id": v.nullable(v.uuid)}
SALE_FIELDS: dict[str, v.Parser] = {
    "customer_id": v.uuid,
    "total": v.amount,
    "payment_method": v.choice("cash", "card", "account"),
    "redeem_points": v.integer(minimum=0),
    "receipt_number": v.nullable(v.text(min_len=1, max_len=50)),
    "override_credit_limit": v.boolean,
}
REFUND_FIELDS: dict[str, v.Parser] = {"amount": v.amount}


def _override(request: web.Request, fields: dict[str, Any]) -> bool:
    if fields.get("override_credit_limit"):
        require_owner(request, "override a credit limit")
        return True
    return False


@routes.get("/api/v1/customers/{id}/ledger")
async def list_ledger(request: web.Request) -> web.Response:
    """Ledger entries newest first, each with the balance after it."""
    customer_id = path_id(request)
    lower, upper = period(request.query.get("from"), request.query.get("to"))
    page, limit = paging(request, default_limit=50)
    rows, total = ledger.list_entries(customer_id, lower, upper, page, limit)
    return list_response(request, rows, total, page, limit)


@routes.post("/api/v1/customers/{id}/ledger")
async def post_ledger_entry(request: web.Request) -> web.Response:
    """Record a payment received (credit) or, owners only, a manual debit."""
    customer_id = path_id(request)

    def write(body: Any) -> tuple[int, Any]:
        fields = v.parse_body(body, ENTRY_FIELDS, required=["type", "amount"])
        if fields["type"] == "debit":
            require_owner(request, "post manual debits")
        entry = ledger.record_entry(
            customer_id,
            fields["type"],
            fields["amount"],
            fields.get("description"),
            fields.get("reference_id"),
            _override(request, fields),
        )
        return 201, entry

    return await idempotent(request, write)


@routes.post("/api/v1/customers/{id}/ledger/{entry_id}/reverse")
async def reverse_ledger_entry(request: web.Request) -> web.Response:
    """Undo an entry with an opposite one (owners only; once per entry)."""
    require_owner(request, "reverse ledger entries")
    customer_id, entry_id = path_id(request), path_id(request, "entry_id")

    def write(body: Any) -> tuple[int, Any]:
        v.parse_body({} if body is None else body, {})
        return 201, ledger.reverse_entry(customer_id, entry_id)

    return await idempotent(request, write, allow_empty=True)


@routes.post("/api/v1/customers/{id}/loyalty/redeem")
async def redeem(request: web.Request) -> web.Response:
    """Redeem points for a discount, optionally on a sale."""
    customer_id = path_id(request)

    def write(body: Any) -> tuple[int, Any]:
        fields = v.parse_body(body, REDEEM_FIELDS, required=["points"])
        return 200, loyalty.redeem_points(customer_id, fields["points"], fields.get("sale_id"))

    return await idempotent(request, write)


@routes.get("/api/v1/customers/{id}/sales")
async def list_customer_sales(request: web.Request) -> web.Response:
    """A customer's sales, newest first."""
    page, limit = paging(request)
    rows, total = sales.list_sales(path_id(request), page, limit)
    return list_response(request, rows, total, page, limit)


@routes.post("/api/v1/sales")
async def post_sale(request: web.Request) -> web.Response:
    """Record a purchase: points, totals and, on account, the ledger debit."""

    def write(body: Any) -> tuple[int, Any]:
        required = ["customer_id", "total", "payment_method"]
        fields = v.parse_body(body, SALE_FIELDS, required=required)
        sale = sales.record_sale(
            fields["customer_id"],
            fields["total"],
            fields["payment_method"],
            fields.get("redeem_points", 0),
            fields.get("receipt_number"),
            _override(request, fields),
        )
        return 201, sale

    return await idempotent(request, write)


@routes.get("/api/v1/sales/{id}")
async def get_sale(request: web.Request) -> web.Response:
    """One sale with its refunds."""
    return json_response(sales.get_sale(path_id(request)))


@routes.post("/api/v1/sales/{id}/refund")
async def refund(request: web.Request) -> web.Response:
    """Refund a sale in full (no body) or in part ({"amount": ...})."""
    sale_id = path_id(request)

    def write(body: Any) -> tuple[int, Any]:
        fields = v.parse_body(body if body is not None else {}, REFUND_FIELDS)
        return 201, sales.refund_sale(sale_id, fields.get("amount"))

    return await idempotent(request, write, allow_empty=True)


@routes.get("/api/v1/settings")
async def get_settings(request: web.Request) -> web.Response:
    """Vendor settings."""
    return json_response(settings.get_settings())


@routes.patch("/api/v1/settings")
async def patch_settings(request: web.Request) -> web.Response:
    """Change vendor settings (owners only); applies from now on."""
    require_owner(request, "change settings")
    fields = v.parse_body(await read_json(request), settings.FIELDS, nonempty=True)
    return json_response(settings.update_settings(fields))


@routes.get("/api/v1/reports/receivables")
async def receivables(request: web.Request) -> web.Response:
    """Who owes what, with ageing buckets."""
    return json_response(reports.receivables(query_int(request, "limit", 100, 1, 1000)))


@routes.get("/api/v1/reports/loyalty")
async def loyalty_report(request: web.Request) -> web.Response:
    """Points outstanding and their value; points earned and redeemed in a period."""
    lower, upper = period(request.query.get("from"), request.query.get("to"))
    return json_response(reports.loyalty_report(lower, upper))

