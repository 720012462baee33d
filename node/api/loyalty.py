"""Loyalty routes: redeeming a customer's points for a discount."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import loyalty
from node import validation as v
from node.api.params import idempotent, path_id

routes = web.RouteTableDef()

REDEEM_INPUT = v.Body("RedeemInput", {
    "points": v.integer(minimum=1),
    "sale_id": v.nullable(v.uuid).describe("the sale the discount applies to (its debt shrinks "
                                           "when it was on account); null: none"),
}, required=("points",))  # fmt: skip


@routes.post("/api/v1/customers/{id}/loyalty/redeem")
async def redeem(request: web.Request) -> web.Response:
    """Redeem points for a discount, optionally on a sale."""
    customer_id = path_id(request)

    def write(body: Any) -> tuple[int, Any]:
        fields = REDEEM_INPUT.parse(body)
        return 200, loyalty.redeem_points(customer_id, fields["points"], fields.get("sale_id"))

    return await idempotent(request, write)
