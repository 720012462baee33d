"""Ledger routes: a customer's entries, payments and manual debits, reversals."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from node import ledger
from node import validation as v
from node.api.auth import credit_limit_override, require_owner
from node.api.params import (
    PAGE,
    PERIOD,
    idempotent,
    list_response,
    path_id,
    per_page,
    read_query,
)
from node.models import ENTRY_TYPES
from node.periods import period
from node.writer import read

routes = web.RouteTableDef()

ENTRY_INPUT = v.Body("LedgerEntryInput", {
    "type": v.choice(*ENTRY_TYPES).describe("credit: a payment received; debit: a "
                                                 "manual debit (owner only)"),
    "amount": v.amount,
    "description": v.nullable(v.text(max_len=ledger.DESCRIPTION_MAX)).describe(
        "null or empty: 'Payment received' or 'Manual debit'"),
    "reference_id": v.nullable(v.uuid).describe("what the entry refers to, e.g. an invoice"),
    "override_credit_limit": v.boolean.describe("owner only: a debit past the credit limit"),
}, required=("type", "amount"))  # fmt: skip
# Nothing to say: no body, null or {}.
REVERSE_INPUT = v.Body("ReverseInput", {}, optional=True,
                       description="nothing: no body, null or {}")  # fmt: skip
LEDGER_QUERY = (*PERIOD, PAGE, per_page(50))


@routes.get("/api/v1/customers/{id}/ledger")
async def list_ledger(request: web.Request) -> web.Response:
    """Ledger entries newest first, each with the balance after it."""
    customer_id = path_id(request)
    query = read_query(request, LEDGER_QUERY)
    lower, upper = period(query["from"], query["to"])
    page, limit = query["page"], query["limit"]
    rows, total = await read(
        partial(ledger.list_entries, customer_id, lower, upper, page, limit)
    )
    return list_response(request, rows, total, page, limit)


@routes.post("/api/v1/customers/{id}/ledger")
async def post_ledger_entry(request: web.Request) -> web.Response:
    """Record a payment received (credit) or, owners only, a manual debit."""
    customer_id = path_id(request)

    def write(body: Any) -> tuple[int, Any]:
        fields = ENTRY_INPUT.parse(body)
        if fields["type"] == "debit":
            require_owner(request, "post manual debits")
        entry = ledger.record_entry(
            customer_id,
            fields["type"],
            fields["amount"],
            fields.get("description"),
            fields.get("reference_id"),
            credit_limit_override(request, fields),
        )
        return 201, entry

    return await idempotent(request, write)


@routes.post("/api/v1/customers/{id}/ledger/{entry_id}/reverse")
async def reverse_ledger_entry(request: web.Request) -> web.Response:
    """Undo an entry with an opposite one (owners only; once per entry)."""
    require_owner(request, "reverse ledger entries")
    customer_id, entry_id = path_id(request), path_id(request, "entry_id")

    def write(body: Any) -> tuple[int, Any]:
        REVERSE_INPUT.parse(body)
        return 201, ledger.reverse_entry(customer_id, entry_id)

    return await idempotent(request, write, allow_empty=REVERSE_INPUT.optional)
