"""Helpers of the node tests: problem responses, a customer's money as a user sees it,
debits, and whole ledgers over a real process."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

CUSTOMERS = "/api/v1/customers"


def ledger_path(customer_id: str) -> str:
    return f"{CUSTOMERS}/{customer_id}/ledger"


async def problem(response: aiohttp.ClientResponse, status: int | None = None) -> dict:
    """Assert an RFC 9457 problem response (with this status, when given): problem+json,
    the usual members, its own status in the body, no traceback. Return its body."""
    text = await response.text()
    if status is not None:
        assert response.status == status, (response.status, text)
    assert response.content_type == "application/problem+json", (response.status, text)
    body = json.loads(text)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == response.status
    assert "Traceback" not in body["detail"]
    return body


def error_fields(body: dict) -> set[str]:
    """The fields a problem's `errors` name."""
    return {e["field"] for e in body.get("errors", [])}


async def ledger(api, customer_id: str, query: str = "") -> list[dict]:
    """A customer's ledger entries (first 100), newest first; `query` adds parameters."""
    return await api.ok("GET", f"{ledger_path(customer_id)}?limit=100{query}")


async def snapshot(api, customer_id: str) -> tuple:
    """Everything a user sees of a customer's money: to compare before and after a request
    that must change nothing (refused, or replayed)."""
    customer = await api.get_customer(customer_id)
    keys = ("loyalty_points", "total_spent", "total_orders", "ledger_balance")
    sales = await api.ok("GET", f"{CUSTOMERS}/{customer_id}/sales?limit=100")
    return (
        tuple(customer[k] for k in keys),
        [p["id"] for p in customer["recent_purchases"]],
        [(e["id"], e["amount"]) for e in await ledger(api, customer_id)],
        [(s["id"], s["refunded_amount"], s["discount_amount"]) for s in sales],
    )


async def debit(api, customer_id: str, amount: int, status: int = 201, **fields: Any) -> dict:
    """A manual debit (the customer owes `amount` more); asserts `status`."""
    body = {"type": "debit", "amount": amount, **fields}
    return await api.ok("POST", ledger_path(customer_id), status, json=body)


# -- a node process over HTTP ------------------------------------------------------------------


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, dict]:
    """One request; its status, JSON body and headers."""
    async with session.request(method, url, **kw) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def all_entries(session: aiohttp.ClientSession, url: str, customer_id: str) -> list[dict]:
    """Every ledger entry of a customer at the node serving `url`, page after page."""
    entries: list[dict] = []
    for page in range(1, 50):
        status, rows, _ = await fetch(
            session, "GET", f"{url}{ledger_path(customer_id)}?limit=100&page={page}"
        )
        assert status == 200, rows
        entries.extend(rows)
        if len(rows) < 100:
            return entries
    raise AssertionError("ledger never ended")
