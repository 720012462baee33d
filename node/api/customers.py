"""Customer routes: list/search, get, create, update, delete."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from node import customers
from node.api.auth import require_owner
from node.api.params import (
    PAGE,
    Query,
    json_response,
    list_response,
    one_of,
    path_id,
    per_page,
    read_json,
    read_query,
)
from node.validation import Body
from node.writer import read, write

routes = web.RouteTableDef()

MAX_SEARCH = 200

FIELDS = {
    **customers.PROFILE_FIELDS,
    "credit_limit": customers.PROFILE_FIELDS["credit_limit"].describe("owner only"),
}
CUSTOMER_INPUT = Body("CustomerInput", FIELDS, required=("name",))
# PATCH, and PUT (the same): any of the fields, at least one.
CUSTOMER_UPDATE = Body(
    "CustomerUpdate", FIELDS, nonempty=True,
    description="a partial update: any of the fields, at least one; tags are replaced",
)  # fmt: skip


def _search(raw: str) -> str:
    if any(ord(ch) < 32 for ch in raw):
        raise ValueError("must not contain control characters")
    return raw[:MAX_SEARCH]


def _order(raw: str) -> str:
    # ASCII first: 'aſc'.upper() is 'ASC' too.
    order = raw.upper() if raw.isascii() else raw
    if order not in ("ASC", "DESC"):
        raise ValueError("must be ASC or DESC")
    return order


LIST_QUERY = (
    PAGE,
    per_page(20),
    Query("search", _search, {"type": "string", "pattern": "^[^\\x00-\\x1f]*$"}, "",
          f"name, email or phone substring (phone ignores formatting); only the first "
          f"{MAX_SEARCH} characters count; no control characters"),
    one_of("sort", customers.SORTS, "created_at", "sort field"),
    Query("order", _order,
          {"type": "string", "pattern": "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$"}, None,
          "ASC or DESC, any case; empty or absent: ASC for name, else DESC"),
)  # fmt: skip


@routes.get("/api/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    """Customers, searched, sorted and paged."""
    query = read_query(request, LIST_QUERY)
    page, limit = query["page"], query["limit"]
    found = await read(partial(
        customers.list_customers, page, limit, query["search"], query["sort"], query["order"]
    ))  # fmt: skip
    return list_response(request, found.body, found.total, page, limit, found.capped, found.more)


@routes.get("/api/v1/customers/{id}")
async def get_customer(request: web.Request) -> web.Response:
    """One customer with recent purchases and ledger balance."""
    return json_response(customers.get_customer(path_id(request)))


@routes.post("/api/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    """Create a customer; only `name` is required."""
    fields = CUSTOMER_INPUT.parse(await read_json(request))
    if "credit_limit" in fields:
        require_owner(request, "set credit limits")
    return json_response(await write(lambda: customers.create_customer(fields)), status=201)


@routes.patch("/api/v1/customers/{id}")
@routes.put("/api/v1/customers/{id}")
async def update_customer(request: web.Request) -> web.Response:
    """Partial update; PUT is accepted as the same. Tags are replaced."""
    customer_id = path_id(request)
    fields = CUSTOMER_UPDATE.parse(await read_json(request))
    if "credit_limit" in fields:
        require_owner(request, "set credit limits")
    return json_response(await write(lambda: customers.update_customer(customer_id, fields)))


@routes.delete("/api/v1/customers/{id}")
async def delete_customer(request: web.Request) -> web.Response:
    """Delete, or anonymize when the customer has history."""
    require_owner(request, "delete customers")
    customer_id = path_id(request)
    await write(lambda: customers.delete_customer(customer_id))
    return json_response({"message": "Customer deleted successfully"})
