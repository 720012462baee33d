"""Report routes: receivables (who owes what, and for how long) and loyalty points."""

from __future__ import annotations

from aiohttp import web

from node import reports
from node.api.params import json_response, query_int
from node.periods import period

routes = web.RouteTableDef()


@routes.get("/api/v1/reports/receivables")
async def receivables(request: web.Request) -> web.Response:
    """Who owes what, with ageing buckets."""
    return json_response(reports.receivables(query_int(request, "limit", 100, 1, 1000)))


@routes.get("/api/v1/reports/loyalty")
async def loyalty_report(request: web.Request) -> web.Response:
    """Points outstanding and their value; points earned and redeemed in a period."""
    lower, upper = period(request.query.get("from"), request.query.get("to"))
    return json_response(reports.loyalty_report(lower, upper))
