"""Simultaneous money writes against a real `shopnode serve` process over real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp

from tests.node.conftest import all_entries, fetch


async def new_customer(session, node, **fields: Any) -> str:
    status, body, _ = await fetch(
        session, "POST", f"{node.url}/api/v1/customers", json={"name": "Busy", **fields}
    )
    assert status == 201, body
    return body["id"]


def points_in_db(node, customer_id: str) -> int:
    db = Path(node.env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(points), 0) FROM loyalty_event WHERE customer_id = ?",
            (customer_id,),
        ).fetchone()
    return row[0]


async def test_fifty_simultaneous_payments_all_land_once(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        customer_id = await new_customer(session, node)
        url = f"{node.url}/api/v1/customers/{customer_id}/ledger"
        amounts = [100 + i for i in range(50)]
        results = await asyncio.gather(
            *(fetch(session, "POST", url, json={"type": "credit", "amount": a}) for a in amounts)
        )
        assert [status for status, _, _ in results] == [201] * 50, results
        ids = {body["id"] for _, body, _ in results}
        assert len(ids) == 50

        entries = await all_entries(session, node.url, customer_id)
        assert {e["id"] for e in entries} == ids
        assert sorted(e["amount"] for e in entries) == amounts
        # Running balances are a clean sequence: newest first, each step one payment.
        assert entries[0]["balance_after"] == sum(amounts)
        for newer, older in zip(entries, entries[1:], strict=False):
            assert newer["balance_after"] - older["balance_after"] == newer["amount"]
        status, customer, _ = await fetch(
            session, "GET", f"{node.url}/api/v1/customers/{customer_id}"
        )
        assert customer["ledger_balance"] == sum(amounts)


async def test_thirty_simultaneous_redemptions_never_overdraw_points(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        customer_id = await new_customer(session, node)
        sale = {"customer_id": customer_id, "total": 10000, "payment_method": "cash"}
        status, body, _ = await fetch(session, "POST", f"{node.url}/api/v1/sales", json=sale)
        assert status == 201 and body["points_earned"] == 100, body

        url = f"{node.url}/api/v1/customers/{customer_id}/loyalty/redeem"
        results = await asyncio.gather(
            *(fetch(session, "POST", url, json={"points": 10}) for _ in range(30))
        )
        assert Counter(status for status, _, _ in results) == {200: 10, 409: 20}, results
        remaining = sorted(body["remaining_points"] for status, body, _ in results if status == 200)
        assert remaining == list(range(0, 100, 10))

        status, customer, _ = await fetch(
            session, "GET", f"{node.url}/api/v1/customers/{customer_id}"
        )
        assert customer["loyalty_points"] == 0
        assert points_in_db(node, customer_id) == 0


async def test_twenty_concurrent_retries_of_one_key_record_once(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        customer_id = await new_customer(session, node)
        url = f"{node.url}/api/v1/customers/{customer_id}/ledger"
        headers = {"Idempotency-Key": "till-2-payment-0042"}
        body = {"type": "credit", "amount": 2500}
        results = await asyncio.gather(
            *(fetch(session, "POST", url, json=body, headers=headers) for _ in range(20))
        )
        assert {status for status, _, _ in results} == {201}, results
        assert len({body["id"] for _, body, _ in results}) == 1
        replayed = [h.get("Idempotent-Replayed") == "true" for _, _, h in results]
        assert replayed.count(False) == 1

        entries = await all_entries(session, node.url, customer_id)
        assert len(entries) == 1
        status, customer, _ = await fetch(
            session, "GET", f"{node.url}/api/v1/customers/{customer_id}"
        )
        assert customer["ledger_balance"] == 2500


async def test_simultaneous_account_sales_respect_the_credit_limit(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        customer_id = await new_customer(session, node, credit_limit=10000)
        sale = {"customer_id": customer_id, "total": 1000, "payment_method": "account"}
        results = await asyncio.gather(
            *(fetch(session, "POST", f"{node.url}/api/v1/sales", json=sale) for _ in range(20))
        )
        assert Counter(status for status, _, _ in results) == {201: 10, 409: 10}, results
        receipts = [body["receipt_number"] for status, body, _ in results if status == 201]
        assert len(set(receipts)) == 10

        status, customer, _ = await fetch(
            session, "GET", f"{node.url}/api/v1/customers/{customer_id}"
        )
        assert customer["ledger_balance"] == -10000
        assert customer["total_orders"] == 10
        assert customer["total_spent"] == 10000
        assert len(await all_entries(session, node.url, customer_id)) == 10


async def test_simultaneous_full_refunds_refund_once(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        customer_id = await new_customer(session, node)
        sale = {"customer_id": customer_id, "total": 7000, "payment_method": "account"}
        status, body, _ = await fetch(session, "POST", f"{node.url}/api/v1/sales", json=sale)
        assert status == 201, body
        url = f"{node.url}/api/v1/sales/{body['id']}/refund"
        results = await asyncio.gather(*(fetch(session, "POST", url) for _ in range(10)))
        assert Counter(status for status, _, _ in results) == {201: 1, 409: 9}, results

        status, customer, _ = await fetch(
            session, "GET", f"{node.url}/api/v1/customers/{customer_id}"
        )
        assert (customer["ledger_balance"], customer["loyalty_points"]) == (0, 0)
        assert (customer["total_spent"], customer["total_orders"]) == (0, 0)
        assert len(await all_entries(session, node.url, customer_id)) == 2
