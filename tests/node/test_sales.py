"""Sales and refunds: points earned and redeemed, totals, receipts, account debits; settings."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from node.clock import machine_zone
from tests.node.conftest import error_fields, ledger, problem, snapshot
from tests.processes import start_node

SALES = "/api/v1/sales"
SETTINGS = "/api/v1/settings"


async def refund(api, sale_id: str, amount: int | None = None, status: int = 201) -> dict:
    kw: dict[str, Any] = {} if amount is None else {"json": {"amount": amount}}
    return await api.ok("POST", f"{SALES}/{sale_id}/refund", status, **kw)


# -- points and totals ------------------------------------------------------------------------


async def test_sale_earns_floor_of_earn_rate_times_major_units(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 12550)
    assert sale["points_earned"] == 125
    assert sale["total"] == 12550
    assert sale["customer_id"] == customer["id"]
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 125
    assert after["total_spent"] == 12550
    assert after["total_orders"] == 1
    assert after["ledger_balance"] == 0  # a cash sale does not touch the khata
    assert await ledger(api, customer["id"]) == []

    small = await api.sale(customer["id"], 99, "card")  # under one dollar: no points
    assert small["points_earned"] == 0
    after = await api.get_customer(customer["id"])
    assert (after["loyalty_points"], after["total_spent"], after["total_orders"]) == (125, 12649, 2)


async def test_fractional_earn_rate_floors(api):
    await api.ok("PATCH", SETTINGS, json={"earn_rate": 1.5})
    customer = await api.customer()
    assert (await api.sale(customer["id"], 999))["points_earned"] == 14  # 1.5 x 9.99 = 14.985
    assert (await api.sale(customer["id"], 1000))["points_earned"] == 15
    await api.ok("PATCH", SETTINGS, json={"earn_rate": 0.1})
    assert (await api.sale(customer["id"], 1999))["points_earned"] == 1  # 0.1 x 19.99
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 30


async def test_zero_decimal_currency_earns_per_whole_unit(api):
    assert (await api.ok("PATCH", SETTINGS, json={"currency": "JPY"}))["currency_decimals"] == 0
    customer = await api.customer()
    assert (await api.sale(customer["id"], 1255))["points_earned"] == 1255


async def test_recent_purchases_newest_first(api):
    customer = await api.customer()
    made = [await api.sale(customer["id"], total) for total in (4500, 1200, 800)]
    recent = (await api.get_customer(customer["id"]))["recent_purchases"]
    assert [p["id"] for p in recent] == [s["id"] for s in reversed(made)]
    assert recent[0] == {
        "id": made[2]["id"],
        "receipt_number": made[2]["receipt_number"],
        "total": 800,
        "created_at": made[2]["created_at"],
    }
    listed = await api.ok("GET", f"/api/v1/customers/{customer['id']}/sales")
    assert [s["id"] for s in listed] == [s["id"] for s in reversed(made)]
    assert (await api.ok("GET", f"{SALES}/{made[0]['id']}"))["total"] == 4500


async def test_sale_for_unknown_customer_is_404(api):
    body = {"customer_id": "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", "total": 100,
            "payment_method": "cash"}  # fmt: skip
    await problem(await api.post(SALES, json=body), 404)


@pytest.mark.parametrize(
    "change",
    [
        {"total": 0},
        {"total": -5},
        {"total": 12.5},
        {"total": "100"},
        {"total": None},
        {"total": 10**13},
        {"total": True},
        {"payment_method": "cheque"},
        {"payment_method": None},
        {"redeem_points": -1},
        {"redeem_points": 1.5},
        {"customer_id": "nope"},
        {"receipt_number": "has space"},
        {"receipt_number": ""},
        {"receipt_number": "x" * 51},
        {"discount": 100},
    ],
    ids=repr,
)
async def test_bad_sale_is_422_and_changes_nothing(api, change):
    customer = await api.customer()
    await api.sale(customer["id"], 5000)
    before = await snapshot(api, customer["id"])
    body = {"customer_id": customer["id"], "total": 1000, "payment_method": "account", **change}
    problem_body = await problem(await api.post(SALES, json=body), 422)
    field = next(iter(change))
    if field != "receipt_number":
        assert field in error_fields(problem_body)
    assert await snapshot(api, customer["id"]) == before


# -- receipt numbers --------------------------------------------------------------------------


async def test_generated_receipt_numbers_are_dated_and_increasing(api):
    customer = await api.customer()
    numbers = [(await api.sale(customer["id"], 100))["receipt_number"] for _ in range(4)]
    today = datetime.now(UTC).strftime("%Y%m%d")
    for number in numbers:
        assert re.fullmatch(r"REC-\d{8}-\d{3,}", number), number
        assert number[4:12] == today
    assert [int(n.rsplit("-", 1)[1]) for n in numbers] == [1, 2, 3, 4]
    assert len(set(numbers)) == 4


async def test_custom_receipt_number_and_duplicates(api):
    jane, john = await api.customer("Jane"), await api.customer("John")
    sale = await api.sale(jane["id"], 1000, receipt_number="POS2-000417")
    assert sale["receipt_number"] == "POS2-000417"
    generated = (await api.sale(jane["id"], 1000))["receipt_number"]

    before = await snapshot(api, john["id"])
    for number in ("POS2-000417", generated):
        body = {"customer_id": john["id"], "total": 500, "payment_method": "account",
                "receipt_number": number}  # fmt: skip
        await problem(await api.post(SALES, json=body), 409)
    assert await snapshot(api, john["id"]) == before
    assert (await api.get_customer(jane["id"]))["total_orders"] == 2


async def test_custom_receipt_in_todays_sequence_is_skipped_by_generator(api):
    customer = await api.customer()
    today = datetime.now(UTC).strftime("%Y%m%d")
    await api.sale(customer["id"], 100, receipt_number=f"REC-{today}-007")
    assert (await api.sale(customer["id"], 100))["receipt_number"] == f"REC-{today}-008"


async def test_numbers_typed_in_never_make_the_generator_repeat_or_overflow(api):
    """A padded number typed in ("0005") made every generated number after it "006"; one of
    50 characters made the next generated one 51, which no shop can take: every sale without
    a number was refused for the rest of the day."""
    customer = await api.customer()
    today = datetime.now(UTC).strftime("%Y%m%d")
    await api.sale(customer["id"], 100, receipt_number=f"REC-{today}-0005")
    await api.sale(customer["id"], 100, receipt_number=f"REC-{today}-" + "9" * 37)
    generated = [(await api.sale(customer["id"], 100, method=method))["receipt_number"]
                 for method in ("cash", "account", "cash")]  # fmt: skip
    assert generated == [f"REC-{today}-{n:03d}" for n in (6, 7, 8)]
    await api.sale(customer["id"], 100, receipt_number=f"REC-{today}-" + "9" * 18)
    following = [(await api.sale(customer["id"], 100))["receipt_number"] for _ in range(2)]
    assert following == [f"REC-{today}-1{'0' * 18}", f"REC-{today}-1{'0' * 17}1"]


# -- redeeming points in a sale ---------------------------------------------------------------


async def test_redeem_points_in_a_sale(api):
    customer = await api.customer()
    await api.sale(customer["id"], 50000)  # 500 points
    sale = await api.sale(customer["id"], 3000, "account", redeem_points=100)
    assert sale["discount_amount"] == 1000  # 100 points x 10
    assert sale["amount_paid"] == 2000
    assert sale["points_redeemed"] == 100
    assert sale["points_earned"] == 20  # earned on what was paid, not on the discount
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 500 - 100 + 20
    assert after["total_spent"] == 50000 + 2000
    assert after["total_orders"] == 2
    assert after["ledger_balance"] == -2000  # only what is owed goes on account
    [entry] = await ledger(api, customer["id"])
    assert entry["amount"] == 2000
    assert entry["description"] == f"Sale {sale['receipt_number']}"


async def test_redeem_uses_current_point_value(api):
    await api.ok("PATCH", SETTINGS, json={"point_value": 25})
    customer = await api.customer()
    await api.sale(customer["id"], 10000)  # 100 points
    sale = await api.sale(customer["id"], 5000, redeem_points=40)
    assert sale["discount_amount"] == 1000


async def test_redeem_more_than_balance_in_sale_is_409(api):
    customer = await api.customer()
    await api.sale(customer["id"], 5000)  # 50 points
    before = await snapshot(api, customer["id"])
    body = {"customer_id": customer["id"], "total": 5000, "payment_method": "account",
            "redeem_points": 51}  # fmt: skip
    problem_body = await problem(await api.post(SALES, json=body), 409)
    assert problem_body.get("available_points", 50) == 50
    assert await snapshot(api, customer["id"]) == before


async def test_redeem_discount_more_than_total_is_422(api):
    customer = await api.customer()
    await api.sale(customer["id"], 50000)  # 500 points
    before = await snapshot(api, customer["id"])
    body = {"customer_id": customer["id"], "total": 999, "payment_method": "account",
            "redeem_points": 100}  # fmt: skip
    problem_body = await problem(await api.post(SALES, json=body), 422)
    assert "redeem_points" in error_fields(problem_body)
    assert await snapshot(api, customer["id"]) == before


async def test_sale_paid_entirely_with_points(api):
    customer = await api.customer()
    await api.sale(customer["id"], 10000)  # 100 points
    sale = await api.sale(customer["id"], 1000, "account", redeem_points=100)
    assert sale["amount_paid"] == 0
    assert sale["points_earned"] == 0
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 0
    assert after["ledger_balance"] == 0  # nothing owed: no zero-amount debit
    assert len(await ledger(api, customer["id"])) == 0


# -- refunds ----------------------------------------------------------------------------------


async def test_full_refund_of_cash_sale(api):
    customer = await api.customer()
    await api.sale(customer["id"], 2000)
    sale = await api.sale(customer["id"], 12550)
    result = await refund(api, sale["id"])
    assert result["amount"] == 12550
    assert result["points_reversed"] == 125
    assert result["sale"]["refunded_amount"] == 12550
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 20
    assert after["total_spent"] == 2000
    assert after["total_orders"] == 1
    assert after["ledger_balance"] == 0
    assert await ledger(api, customer["id"]) == []
    shown = await api.ok("GET", f"{SALES}/{sale['id']}")
    assert [r["amount"] for r in shown["refunds"]] == [12550]


async def test_second_full_refund_is_409(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 5000, "account")
    await refund(api, sale["id"])
    before = await snapshot(api, customer["id"])
    await problem(await api.post(f"{SALES}/{sale['id']}/refund"), 409)
    await problem(await api.post(f"{SALES}/{sale['id']}/refund", json={"amount": 1}), 409)
    assert await snapshot(api, customer["id"]) == before


async def test_partial_refunds_reverse_points_cumulatively(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 1000)  # 10 points
    # Three refunds of a third each: each alone would floor 3.33 to 3 and lose a point.
    reversed_points = [(await refund(api, sale["id"], 333))["points_reversed"] for _ in range(3)]
    assert reversed_points == [3, 3, 3]
    after = await api.get_customer(customer["id"])
    assert after["total_spent"] == 1
    assert after["total_orders"] == 1  # not fully refunded yet
    last = await refund(api, sale["id"])
    assert last["amount"] == 1
    assert last["points_reversed"] == 1
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 0
    assert (after["total_spent"], after["total_orders"]) == (0, 0)


async def test_partial_refund_of_account_sale_credits_ledger(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 10000, "account")  # 100 points
    result = await refund(api, sale["id"], 2500)
    assert result["amount"] == 2500
    assert result["points_reversed"] == 25
    assert result["sale"]["amount_paid"] == 7500
    after = await api.get_customer(customer["id"])
    assert after["ledger_balance"] == -7500
    assert after["loyalty_points"] == 75
    assert after["total_spent"] == 7500
    assert after["total_orders"] == 1
    credit = (await ledger(api, customer["id"]))[0]
    assert credit["type"] == "credit"
    assert credit["amount"] == 2500
    assert credit["description"] == f"Refund {sale['receipt_number']}"
    assert credit["balance_after"] == -7500

    await refund(api, sale["id"])  # the rest
    after = await api.get_customer(customer["id"])
    assert (after["ledger_balance"], after["loyalty_points"]) == (0, 0)
    assert (after["total_spent"], after["total_orders"]) == (0, 0)
    assert [e["amount"] for e in await ledger(api, customer["id"])] == [7500, 2500, 10000]


async def test_refund_restores_redeemed_points_in_proportion(api):
    customer = await api.customer()
    await api.sale(customer["id"], 20000)  # 200 points
    sale = await api.sale(customer["id"], 10000, redeem_points=100)  # pays 9000, earns 90
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 190
    half = await refund(api, sale["id"], 4500)
    assert half["points_restored"] == 50
    assert half["points_reversed"] == 45
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 195
    rest = await refund(api, sale["id"])
    assert rest["amount"] == 4500
    assert (rest["points_restored"], rest["points_reversed"]) == (50, 45)
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 200  # as if the second sale never happened
    assert after["total_spent"] == 20000
    assert after["total_orders"] == 1


async def test_refund_never_takes_points_below_zero_and_records_shortfall(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 10000)  # 100 points
    await api.ok("POST", f"/api/v1/customers/{customer['id']}/loyalty/redeem", json={"points": 80})
    result = await refund(api, sale["id"])
    assert result["points_reversed"] == 20
    assert result["points_shortfall"] == 80
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 0
    assert after["total_spent"] == 0
    # Points earned later are not silently clawed back by the old refund.
    await api.sale(customer["id"], 3000)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 30


async def test_refund_of_sale_paid_with_points_gives_points_back(api):
    customer = await api.customer()
    await api.sale(customer["id"], 10000)  # 100 points
    sale = await api.sale(customer["id"], 500, redeem_points=50)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 50
    result = await refund(api, sale["id"])
    assert result["amount"] == 0
    assert result["points_restored"] == 50
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 100
    assert after["total_orders"] == 1
    await problem(await api.post(f"{SALES}/{sale['id']}/refund"), 409)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 100


@pytest.mark.parametrize("amount", [10001, 0, -1, 10.5, "100", None, True, [1]], ids=repr)
async def test_bad_refund_amount_changes_nothing(api, amount):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 10000, "account")
    before = await snapshot(api, customer["id"])
    response = await api.post(f"{SALES}/{sale['id']}/refund", json={"amount": amount})
    problem_body = await problem(response, 422)
    assert "amount" in error_fields(problem_body)
    assert await snapshot(api, customer["id"]) == before
    assert (await api.ok("GET", f"{SALES}/{sale['id']}"))["refunds"] == []


async def test_refund_beyond_what_is_left_is_422(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 10000, "account")
    await refund(api, sale["id"], 6000)
    before = await snapshot(api, customer["id"])
    response = await api.post(f"{SALES}/{sale['id']}/refund", json={"amount": 4001})
    await problem(response, 422)
    assert await snapshot(api, customer["id"]) == before
    assert (await refund(api, sale["id"], 4000))["amount"] == 4000


async def test_refund_rejects_unknown_fields_and_unknown_sales(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 10000)
    before = await snapshot(api, customer["id"])
    body = await problem(
        await api.post(f"{SALES}/{sale['id']}/refund", json={"amount": 100, "reason": "x"}), 422
    )
    assert "reason" in error_fields(body)
    missing = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    await problem(await api.post(f"{SALES}/{missing}/refund"), 404)
    assert await snapshot(api, customer["id"]) == before


# -- settings ---------------------------------------------------------------------------------


async def test_settings_defaults_and_update(api):
    assert await api.ok("GET", SETTINGS) == {
        "earn_rate": 1,
        "point_value": 10,
        "default_credit_limit": None,
        "currency": "USD",
        "currency_decimals": 2,
        "timezone": str(machine_zone()),  # no [node] timezone: the machine's
    }
    changed = await api.ok(
        "PATCH", SETTINGS, json={"earn_rate": 2.5, "point_value": 5, "default_credit_limit": 50000}
    )
    assert changed == {
        "earn_rate": 2.5,
        "point_value": 5,
        "default_credit_limit": 50000,
        "currency": "USD",
        "currency_decimals": 2,
        "timezone": str(machine_zone()),  # no [node] timezone: the machine's
    }
    assert await api.ok("GET", SETTINGS) == changed
    assert await api.ok("GET", SETTINGS, staff=True) == changed  # staff may look


async def test_settings_change_is_owner_only(api):
    await problem(await api.patch(SETTINGS, staff=True, json={"earn_rate": 100}), 403)
    assert (await api.ok("GET", SETTINGS))["earn_rate"] == 1
    await problem(await api.request("PATCH", SETTINGS, headers={"Authorization": ""}), 401)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"earn_rate": -1},
        {"earn_rate": "1"},
        {"earn_rate": True},
        {"earn_rate": None},
        {"earn_rate": 0.00001},
        {"earn_rate": 10**9},
        {"point_value": -1},
        {"point_value": 2.5},
        {"point_value": "10"},
        {"default_credit_limit": -1},
        {"default_credit_limit": 10.5},
        {"currency": "XYZ"},
        {"currency": 840},
        {"currency_decimals": 3},  # read-only: it follows the currency
        {"earn_rate": 2, "points_value": 5},
        [],
    ],
    ids=repr,
)
async def test_bad_settings_are_422_and_change_nothing(api, body):
    before = await api.ok("GET", SETTINGS)
    problem_body = await problem(await api.patch(SETTINGS, json=body), 422)
    if isinstance(body, dict) and body:
        wrong = [k for k in body if not (k == "earn_rate" and body[k] == 2)]
        assert set(wrong) <= error_fields(problem_body)
    assert await api.ok("GET", SETTINGS) == before


async def test_earn_rate_change_is_not_retroactive(api):
    customer = await api.customer()
    old = await api.sale(customer["id"], 10000)  # 100 points at rate 1
    await api.ok("PATCH", SETTINGS, json={"earn_rate": 3})
    assert (await api.ok("GET", f"{SALES}/{old['id']}"))["points_earned"] == 100
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 100
    new = await api.sale(customer["id"], 10000)
    assert new["points_earned"] == 300
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 400
    # Refunding the old sale takes back what it earned then, not what it would earn now.
    assert (await refund(api, old["id"]))["points_reversed"] == 100
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 300


async def test_settings_survive_a_restart(node):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        async with session.patch(
            f"{node.url}{SETTINGS}", json={"earn_rate": 0.5, "point_value": 20}
        ) as response:
            assert response.status == 200
    assert node.stop(signal.SIGTERM) == 0
    restarted = start_node(node.env, node.log)
    try:
        async with aiohttp.ClientSession(headers=node.headers) as session:
            async with session.get(f"{restarted.url}{SETTINGS}") as response:
                settings = await response.json()
            assert (settings["earn_rate"], settings["point_value"]) == (0.5, 20)
            async with session.post(f"{restarted.url}/api/v1/customers", json={"name": "A"}) as r:
                customer = await r.json()
            sale = {"customer_id": customer["id"], "total": 1000, "payment_method": "cash"}
            async with session.post(f"{restarted.url}{SALES}", json=sale) as response:
                assert (await response.json())["points_earned"] == 5
    finally:
        restarted.stop()
