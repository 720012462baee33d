"""Sale routes: a customer's sales, recording a sale, reading one, refunds."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from node import sales
from node import validation as v
from node.api.auth import credit_limit_override
from node.api.params import (
    PAGE,
    idempotent,
    json_response,
    list_response,
    path_id,
    per_page,
    read_query,
)
from node.models import PAYMENT_METHODS
from node.writer import read

routes = web.RouteTableDef()

SALE_INPUT = v.Body("SaleInput", {
    "customer_id": v.uuid,
    "total": v.amount.describe("before any points discount"),
    "payment_method": v.choice(*PAYMENT_METHODS).describe(
        "account: on the customer's ledger (buy now, pay later)"),
    "redeem_points": v.integer(minimum=0).describe("points spent as a discount on this sale"),
    "receipt_number": v.nullable(v.matching(
        sales.RECEIPT, 50, "letters, digits and - _ / . only, at most 50",
        "trimmed; a letter or digit, then letters, digits and - _ / . (at most 50 "
        "characters); unique in this shop; null or absent: the day's next REC-YYYYMMDD-NNN")),
    "override_credit_limit": v.boolean.describe(
        "owner only: an account sale past the credit limit"),
}, required=("customer_id", "total", "payment_method"))  # fmt: skip
REFUND_INPUT = v.Body(
    "RefundInput", {"amount": v.amount.describe("at most what is left to refund")},
    optional=True, description="no body, null or {}: a full refund; {amount}: a partial one",
)  # fmt: skip
SALES_QUERY = (PAGE, per_page(20))


@routes.get("/api/v1/customers/{id}/sales")
async def list_customer_sales(request: web.Request) -> web.Response:
    """A customer's sales, newest first."""
    customer_id = path_id(request)
    query = read_query(request, SALES_QUERY)
    page, limit = query["page"], query["limit"]
    rows, total = await read(partial(sales.list_sales, customer_id, page, limit))
    return list_response(request, rows, total, page, limit)


@routes.post("/api/v1/sales")
async def post_sale(request: web.Request) -> web.Response:
    """Record a purchase: points, totals and, on account, the ledger debit."""

    def write(body: Any) -> tuple[int, Any]:
        fields = SALE_INPUT.parse(body)
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
        fields = REFUND_INPUT.parse(body)
        return 201, sales.refund_sale(sale_id, fields.get("amount"))

    return await idempotent(request, write, allow_empty=REFUND_INPUT.optional)
