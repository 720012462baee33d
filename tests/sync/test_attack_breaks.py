"""A value the node took with 201 but central refuses made central refuse the shop's whole
push at every round after: every later payment of that shop stayed at the till. Each case
was found by an attack from outside; the node now refuses them (or central takes them)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import call
from tests.processes import NodeProcess
from tests.sync.conftest import Shops, get, post, synced
from tests.sync.faults import start_shops


def points_past_what_central_takes(shop: NodeProcess, customer: str) -> tuple[int, object]:
    # earn_rate 1000 (the most the settings take) on a sale of 10**12 (the largest amount)
    # earned 10**13 points; central refuses any integer past 10**12.
    assert call(shop, "PATCH", "/api/v1/settings", {"earn_rate": 1000})[0] == 200
    return call(shop, "POST", "/api/v1/sales",
                {"customer_id": customer, "total": 10**12, "payment_method": "cash"})  # fmt: skip


def new_customer(**fields: object) -> Callable[[NodeProcess, str], tuple[int, object]]:
    return lambda shop, _: call(shop, "POST", "/api/v1/customers", {"name": "Ravi", **fields})


CASES = {
    # A pasted or scanned tag: central refuses any text with NUL.
    "a tag holding NUL": new_customer(tags=["vip\x00"]),
    "points past what central takes": points_past_what_central_takes,
    # Tags are stored as JSON text with non-ASCII escaped: an emoji outside the BMP is 12
    # characters, so 20 tags of 50 emoji (within the API's rules) are ~12,000 characters.
    "20 tags of 50 emoji": new_customer(tags=[f"{n:02d}" + "\U0001f382" * 48
                                              for n in range(20)]),  # fmt: skip
    # The domain is lower-cased after its 254 characters are checked; "İ" lower-cases to two.
    "an email that grows when lower-cased": new_customer(email="a@" + "İ" * 247 + ".com"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_value_central_would_refuse_never_stops_the_shops_payments(shops: Shops, case: str):
    a, b = start_shops(shops, "shop-a", "shop-b")
    customer = post(a, "/api/v1/customers", {"name": "Asha"})["id"]
    status, answer = CASES[case](a, customer)
    assert status in (201, 409, 422), answer
    post(a, f"/api/v1/customers/{customer}/ledger", {"type": "credit", "amount": 5000})
    synced(a, b)
    assert get(b, f"/api/v1/customers/{customer}")["ledger_balance"] == 5000
