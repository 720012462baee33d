"""Sale routes: a customer's sales, recording a sale, reading one, refunds."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import sales
from node import validation as v
from node.api.auth import credit_limit_override
from node.api.params import idempotent, json_response, list_response, paging, path_id

routes = web.RouteTableDef()

SALE_FIELDS: dict[str, v.Parser] = {
    "customer_id": v.uuid,
    "total": v.amount,
    "payment_method": v.choice("cash", "card", "account"),
    "redeem_points": v.integer(minimum=0),
    "receipt_number": v.nullable(v.text(min_len=1, max_len=50)),
    "override_credit_limit": v.boolean,
}
REFUND_FIELDS: dict[str, v.Parser] = {"amount": v.amount}


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
            credit_limit_override(request, fields),
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
