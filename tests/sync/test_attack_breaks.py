"""Breaks found by the attack helper (issue 12 session), each a user-visible outcome."""

from __future__ import annotations

from tests.conftest import call
from tests.sync.conftest import Shops, get, post, synced


def test_a_tag_with_nul_does_not_stop_the_shops_payments_reaching_other_shops(shops: Shops):
    # The node took a tag holding NUL ("vip\u0000", a pasted or scanned value) with 201, but
    # central refuses any text with NUL: the whole push was refused (422) at every round
    # after, and every later payment of that shop stayed at the till.
    a, b = shops.start("shop-a"), shops.start("shop-b")
    status, answer = call(a, "POST", "/api/v1/customers", {"name": "Ravi", "tags": ["vip\x00"]})
    assert status in (201, 422), answer
    cid = post(a, "/api/v1/customers", {"name": "Asha"})["id"]
    post(a, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 5000})
    synced(a, b)
    assert get(b, f"/api/v1/customers/{cid}")["ledger_balance"] == 5000
