"""Customers' Telegram links stay on their shop's node, and go when the customer is
anonymized anywhere."""

from __future__ import annotations

from tests.conftest import call
from tests.sync.conftest import Shops, post, synced
from tests.sync.faults import start_shops


def test_links_are_not_synced_and_an_anonymization_from_elsewhere_erases_them(shops: Shops):
    a, b = start_shops(shops, "shop-a", "shop-b")
    cid = post(a, "/api/v1/customers", {"name": "Linked Person", "phone": "+1 555 0123"})["id"]
    post(a, "/api/v1/sales", {"customer_id": cid, "total": 1000, "payment_method": "cash"})
    synced(a, b)
    code = post(b, f"/api/v1/customers/{cid}/telegram/invite", {})["code"]
    post(b, "/api/v1/telegram/links", {"code": code, "telegram_user_id": 4711})
    synced(b, a)
    assert call(a, "GET", "/api/v1/telegram/links/4711")[0] == 404  # never left shop B
    assert call(b, "GET", "/api/v1/telegram/links/4711")[0] == 200
    assert call(a, "DELETE", f"/api/v1/customers/{cid}")[0] == 200  # anonymized at shop A
    synced(a, b)
    assert call(b, "GET", "/api/v1/telegram/links/4711")[0] == 404
    assert call(b, "POST", "/api/v1/telegram/invites/check", {"code": code})[0] == 404
