"""Customer routes: list/search, get, create, update, delete."""

from __future__ import annotations

from aiohttp import web

from node import customers
from node.api.auth import require_owner
from node.api.params import json_response, list_response, paging, path_id, query_choice, read_json
from node.errors import invalid
from node.validation import parse_body

routes = web.RouteTableDef()

MAX_SEARCH = 200


@routes.get("/api/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    """Customers, searched, sorted and paged."""
    page, limit = paging(request)
    search = request.query.get("search", "")
    if any(ord(ch) < 32 for ch in search):
        raise invalid("search", "must not contain control characters")
    search = search[:MAX_SEARCH]
    sort = query_choice(request, "sort", list(customers.SORTS), "created_at")
    raw_order = request.query.get("order", "")
    # ASCII first: 'aſc'.upper() is 'ASC' too.
    order = raw_order.upper() if raw_order.isascii() else raw_order
    if order not in ("", "ASC", "DESC"):
        raise invalid("order", "must be ASC or DESC")
    rows, total = customers.list_customers(page, limit, search, sort, order or None)
    return list_response(request, rows, total, page, limit)


@routes.get("/api/v1/customers/{id}")
async def get_customer(request: web.Request) -> web.Response:
    """One customer with recent purchases and ledger balance."""
    return json_response(customers.get_customer(path_id(request)))


@routes.post("/api/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    """Create a customer; only `name` is required."""
    fields = parse_body(await read_json(request), customers.PROFILE_FIELDS, required=["name"])
    if "credit_limit" in fields:
        require_owner(request, "set credit limits")
    return json_response(customers.create_customer(fields), status=201)


@routes.patch("/api/v1/customers/{id}")
@routes.put("/api/v1/customers/{id}")
async def update_customer(request: web.Request) -> web.Response:
    """Partial update; PUT is accepted as the same. Tags are replaced."""
    customer_id = path_id(request)
    fields = parse_body(await read_json(request), customers.PROFILE_FIELDS, nonempty=True)
    if "credit_limit" in fields:
        require_owner(request, "set credit limits")
    return json_response(customers.update_customer(customer_id, fields))


@routes.delete("/api/v1/customers/{id}")
async def delete_customer(request: web.Request) -> web.Response:
    """Delete, or anonymize when the customer has history."""
    require_owner(request, "delete customers")
    customers.delete_customer(path_id(request))
    return json_response({"message": "Customer deleted successfully"})
