"""Report routes: receivables (who owes what, and for how long) and loyalty points."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from node import reports
from node.api.params import PERIOD, json_response, read_query, whole_number
from node.periods import period
from node.writer import read

routes = web.RouteTableDef()

RECEIVABLES_QUERY = (whole_number("limit", 1, 1000, 100, "customers listed, most owed first"),)
LOYALTY_QUERY = PERIOD


@routes.get("/api/v1/reports/receivables")
async def receivables(request: web.Request) -> web.Response:
    """Who owes what, with ageing buckets."""
    query = read_query(request, RECEIVABLES_QUERY)
    return json_response(await read(partial(reports.receivables, query["limit"])))


@routes.get("/api/v1/reports/loyalty")
async def loyalty_report(request: web.Request) -> web.Response:
    """Points outstanding and their value; points earned and redeemed in a period."""
    query = read_query(request, LOYALTY_QUERY)
    lower, upper = period(query["from"], query["to"])
    return json_response(await read(partial(reports.loyalty_report, lower, upper)))
