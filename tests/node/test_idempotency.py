"""Idempotency-Key on money writes: a retry returns the first response and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.node.conftest import ledger, snapshot


def key_headers(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def send(api, method: str, path: str, key: str, **kw: Any) -> tuple[int, Any, dict]:
    response = await api.request(method, path, headers=key_headers(key), **kw)
    return response.status, await response.json(content_type=None), dict(response.headers)


async def assert_replayed_once(api, method: str, path: str, customer_id: str, **kw: Any):
    """Send the same keyed request twice: first applies, second replays; return the body."""
    status, first, headers = await send(api, method, path, "key-1", **kw)
    assert status in (200, 201), first
    assert headers.get("Idempotent-Replayed") != "true"
    after_first = await snapshot(api, customer_id)

    again_status, again, again_headers = await send(api, method, path, "key-1", **kw)
    assert again_status == status
    assert again == first
    assert again_headers.get("Idempotent-Replayed") == "true"
    assert await snapshot(api, customer_id) == after_first
    return first


# -- each kind of money write -----------------------------------------------------------------


async def test_payment_retry_records_once(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    body = {"type": "credit", "amount": 10000, "description": "Paid in cash"}
    entry = await assert_replayed_once(api, "POST", path, customer["id"], json=body)
    assert [e["id"] for e in await ledger(api, customer["id"])] == [entry["id"]]
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 10000


async def test_same_body_in_another_spelling_is_the_same_request(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    compact = json.dumps({"type": "credit", "amount": 500})
    spaced = '{\n  "amount": 500,\n  "type": "credit"\n}'
    status, first, _ = await send(api, "POST", path, "k", data=compact)
    assert status == 201
    status, again, headers = await send(api, "POST", path, "k", data=spaced)
    assert status == 201
    assert again == first
    assert headers.get("Idempotent-Replayed") == "true"
    assert len(await ledger(api, customer["id"])) == 1


async def test_sale_retry_records_once(api):
    customer = await api.customer()
    body = {"customer_id": customer["id"], "total": 12550, "payment_method": "account"}
    sale = await assert_replayed_once(api, "POST", "/api/v1/sales", customer["id"], json=body)
    after = await api.get_customer(customer["id"])
    assert (after["total_orders"], after["total_spent"], after["loyalty_points"]) == (1, 12550, 125)
    assert after["ledger_balance"] == -12550
    assert [p["id"] for p in after["recent_purchases"]] == [sale["id"]]


async def test_sale_with_redemption_retry_redeems_once(api):
    customer = await api.customer()
    await api.sale(customer["id"], 10000)  # 100 points
    body = {"customer_id": customer["id"], "total": 5000, "payment_method": "cash",
            "redeem_points": 100}  # fmt: skip
    await assert_replayed_once(api, "POST", "/api/v1/sales", customer["id"], json=body)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 40


async def test_full_refund_retry_refunds_once_and_is_not_a_409(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 8000, "account")
    path = f"/api/v1/sales/{sale['id']}/refund"
    result = await assert_replayed_once(api, "POST", path, customer["id"])
    assert result["amount"] == 8000
    after = await api.get_customer(customer["id"])
    assert (after["ledger_balance"], after["loyalty_points"], after["total_orders"]) == (0, 0, 0)


async def test_partial_refund_retry_refunds_once(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 8000, "account")
    path = f"/api/v1/sales/{sale['id']}/refund"
    await assert_replayed_once(api, "POST", path, customer["id"], json={"amount": 3000})
    shown = await api.ok("GET", f"/api/v1/sales/{sale['id']}")
    assert shown["refunded_amount"] == 3000
    assert len(shown["refunds"]) == 1
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == -5000


async def test_redemption_retry_redeems_once(api):
    customer = await api.customer()
    await api.sale(customer["id"], 45000)
    path = f"/api/v1/customers/{customer['id']}/loyalty/redeem"
    body = await assert_replayed_once(api, "POST", path, customer["id"], json={"points": 100})
    assert body == {"redeemed": 100, "discount_amount": 1000, "remaining_points": 350}
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 350


async def test_redemption_on_sale_retry_redeems_once(api):
    customer = await api.customer()
    await api.sale(customer["id"], 45000)
    sale = await api.sale(customer["id"], 5000, "account")
    path = f"/api/v1/customers/{customer['id']}/loyalty/redeem"
    await assert_replayed_once(
        api, "POST", path, customer["id"], json={"points": 100, "sale_id": sale["id"]}
    )
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == -4000


async def test_reversal_retry_reverses_once(api):
    customer = await api.customer()
    entry = await api.pay(customer["id"], 5000)
    path = f"/api/v1/customers/{customer['id']}/ledger/{entry['id']}/reverse"
    await assert_replayed_once(api, "POST", path, customer["id"])
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 0


# -- same key, different request --------------------------------------------------------------


async def test_same_key_with_different_body_is_422_and_changes_nothing(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    status, _, _ = await send(api, "POST", path, "k", json={"type": "credit", "amount": 100})
    assert status == 201
    before = await snapshot(api, customer["id"])
    status, body, headers = await send(
        api, "POST", path, "k", json={"type": "credit", "amount": 200}
    )
    assert status == 422
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 422
    assert await snapshot(api, customer["id"]) == before


async def test_same_key_on_another_route_or_customer_is_422(api):
    jane, john = await api.customer("Jane"), await api.customer("John")
    body = {"type": "credit", "amount": 100}
    status, _, _ = await send(api, "POST", f"/api/v1/customers/{jane['id']}/ledger", "k", json=body)
    assert status == 201
    before = await snapshot(api, john["id"])
    status, _, _ = await send(api, "POST", f"/api/v1/customers/{john['id']}/ledger", "k", json=body)
    assert status == 422
    sale = {"customer_id": john["id"], "total": 100, "payment_method": "account"}
    status, _, _ = await send(api, "POST", "/api/v1/sales", "k", json=sale)
    assert status == 422
    assert await snapshot(api, john["id"]) == before


async def test_partial_then_full_refund_with_same_key_is_422(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 8000)
    path = f"/api/v1/sales/{sale['id']}/refund"
    status, _, _ = await send(api, "POST", path, "r", json={"amount": 1000})
    assert status == 201
    before = await snapshot(api, customer["id"])
    status, _, _ = await send(api, "POST", path, "r")
    assert status == 422
    assert await snapshot(api, customer["id"]) == before


async def test_different_keys_are_different_requests(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    body = {"type": "credit", "amount": 100}
    for key in ("a", "b", "c"):
        status, _, headers = await send(api, "POST", path, key, json=body)
        assert status == 201
        assert headers.get("Idempotent-Replayed") != "true"
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 300


@pytest.mark.parametrize("key", ["", "x" * 256])
async def test_unusable_key_is_refused(api, key):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    status, body, _ = await send(api, "POST", path, key, json={"type": "credit", "amount": 100})
    assert status == 422, body
    assert await ledger(api, customer["id"]) == []


# -- failures store nothing -------------------------------------------------------------------


async def test_failed_redemption_stores_nothing_so_retry_after_earning_works(api):
    customer = await api.customer()
    await api.sale(customer["id"], 5000)  # 50 points
    path = f"/api/v1/customers/{customer['id']}/loyalty/redeem"
    status, _, _ = await send(api, "POST", path, "redeem-1", json={"points": 100})
    assert status == 409
    await api.sale(customer["id"], 5000)  # now 100 points
    status, body, headers = await send(api, "POST", path, "redeem-1", json={"points": 100})
    assert status == 200
    assert headers.get("Idempotent-Replayed") != "true"
    assert body["remaining_points"] == 0
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 0


async def test_failed_debit_over_limit_stores_nothing_so_retry_after_raise_works(api):
    customer = await api.customer(credit_limit=1000)
    path = f"/api/v1/customers/{customer['id']}/ledger"
    body = {"type": "debit", "amount": 5000}
    status, _, _ = await send(api, "POST", path, "debit-1", json=body)
    assert status == 409
    await api.ok("PATCH", f"/api/v1/customers/{customer['id']}", json={"credit_limit": 10000})
    status, entry, _ = await send(api, "POST", path, "debit-1", json=body)
    assert status == 201
    assert entry["balance_after"] == -5000
    status, again, headers = await send(api, "POST", path, "debit-1", json=body)
    assert (status, again, headers.get("Idempotent-Replayed")) == (201, entry, "true")
    assert len(await ledger(api, customer["id"])) == 1


async def test_failed_validation_stores_nothing_so_the_fixed_request_can_use_the_key(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    status, _, _ = await send(api, "POST", path, "k", json={"type": "credit", "amount": "50"})
    assert status == 422
    status, _, _ = await send(api, "POST", path, "k", json={"type": "credit", "amount": 50})
    assert status == 201
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 50


async def test_forbidden_request_stores_nothing(api):
    customer = await api.customer()
    path = f"/api/v1/customers/{customer['id']}/ledger"
    body = {"type": "debit", "amount": 700}
    response = await api.post(path, staff=True, headers=key_headers("d"), json=body)
    assert response.status == 403
    status, entry, headers = await send(api, "POST", path, "d", json=body)
    assert status == 201
    assert headers.get("Idempotent-Replayed") != "true"
    assert entry["balance_after"] == -700


async def test_failed_sale_with_duplicate_receipt_stores_nothing(api):
    customer = await api.customer()
    await api.sale(customer["id"], 100, receipt_number="R-1")
    body = {"customer_id": customer["id"], "total": 100, "payment_method": "cash",
            "receipt_number": "R-1"}  # fmt: skip
    status, _, _ = await send(api, "POST", "/api/v1/sales", "s", json=body)
    assert status == 409
    status, _, _ = await send(
        api, "POST", "/api/v1/sales", "s", json={**body, "receipt_number": "R-2"}
    )
    assert status == 201
    assert (await api.get_customer(customer["id"]))["total_orders"] == 2


async def test_replay_survives_a_later_state_change(api):
    """A retry long after the fact still gets the first answer, not a fresh evaluation."""
    customer = await api.customer()
    await api.sale(customer["id"], 5000)
    path = f"/api/v1/customers/{customer['id']}/loyalty/redeem"
    status, first, _ = await send(api, "POST", path, "late", json={"points": 50})
    assert status == 200
    # Points are now 0: evaluated afresh this would be a 409.
    status, again, headers = await send(api, "POST", path, "late", json={"points": 50})
    assert (status, again, headers.get("Idempotent-Replayed")) == (200, first, "true")
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 0
