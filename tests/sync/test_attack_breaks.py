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


def test_a_sale_earning_more_points_than_central_takes_does_not_stop_the_shops_payments(
    shops: Shops,
):
    # earn_rate 1000 (the most the settings take) on a sale of 10**12 (the largest amount):
    # the node records points_earned 10**13 with 201, central refuses any integer past 10**12,
    # and the shop's whole push was refused at every round after: its payments stayed local.
    a, b = shops.start("shop-a"), shops.start("shop-b")
    status, answer = call(a, "PATCH", "/api/v1/settings", {"earn_rate": 1000})
    assert status == 200, answer
    cid = post(a, "/api/v1/customers", {"name": "Asha"})["id"]
    status, answer = call(a, "POST", "/api/v1/sales",
                          {"customer_id": cid, "total": 10**12, "payment_method": "cash"})
    assert status in (201, 409, 422), answer
    post(a, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 5000})
    synced(a, b)
    assert get(b, f"/api/v1/customers/{cid}")["ledger_balance"] == 5000


def test_a_customer_tagged_in_emoji_does_not_stop_the_shops_payments_reaching_other_shops(
    shops: Shops,
):
    # Tags are stored as JSON text with non-ASCII escaped: an emoji outside the BMP is 12
    # characters ("\ud83c\udf82"). 20 tags of 50 such characters are within the API's rules
    # (201) but ~12,000 characters of text, past the 6,100 central takes for a tag list.
    a, b = shops.start("shop-a"), shops.start("shop-b")
    tags = [f"{n:02d}" + "\U0001f382" * 48 for n in range(20)]
    status, answer = call(a, "POST", "/api/v1/customers", {"name": "Ravi", "tags": tags})
    assert status in (201, 422), answer
    cid = post(a, "/api/v1/customers", {"name": "Asha"})["id"]
    post(a, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 5000})
    synced(a, b)
    assert get(b, f"/api/v1/customers/{cid}")["ledger_balance"] == 5000


def test_an_email_whose_domain_grows_when_lower_cased_does_not_stop_the_shops_payments(
    shops: Shops,
):
    # The node lower-cases an email's domain after checking its 254 characters: "İ" (Turkish
    # capital dotted I) lower-cases to two characters, so a 254-character address is stored
    # longer than central takes.
    a, b = shops.start("shop-a"), shops.start("shop-b")
    email = "a@" + "İ" * 247 + ".com"
    status, answer = call(a, "POST", "/api/v1/customers", {"name": "Ravi", "email": email})
    assert status in (201, 422), answer
    cid = post(a, "/api/v1/customers", {"name": "Asha"})["id"]
    post(a, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 5000})
    synced(a, b)
    assert get(b, f"/api/v1/customers/{cid}")["ledger_balance"] == 5000
