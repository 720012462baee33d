"""Loyalty redemption and the two money reports (loyalty, receivables with ageing)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.node.conftest import debit, ledger, problem, snapshot

SETTINGS = "/api/v1/settings"
RECEIVABLES = "/api/v1/reports/receivables"
LOYALTY_REPORT = "/api/v1/reports/loyalty"


def redeem_path(customer_id: str) -> str:
    return f"/api/v1/customers/{customer_id}/loyalty/redeem"


async def with_points(api, points: int, name: str = "Jane Doe") -> dict:
    """A customer who earned `points` from one cash sale (earn rate 1, USD)."""
    customer = await api.customer(name)
    await api.sale(customer["id"], points * 100)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == points
    return customer


# -- redeeming --------------------------------------------------------------------------------


async def test_redeem_as_in_the_seed(api):
    customer = await with_points(api, 450)
    body = await api.ok("POST", redeem_path(customer["id"]), json={"points": 100})
    assert body == {"redeemed": 100, "discount_amount": 1000, "remaining_points": 350}
    after = await api.get_customer(customer["id"])
    assert after["loyalty_points"] == 350
    assert after["ledger_balance"] == 0
    assert after["total_spent"] == 45000


async def test_redeem_everything_then_nothing_more(api):
    customer = await with_points(api, 30)
    body = await api.ok("POST", redeem_path(customer["id"]), json={"points": 30})
    assert body["remaining_points"] == 0
    await problem(await api.post(redeem_path(customer["id"]), json={"points": 1}), 409)
    assert (await api.get_customer(customer["id"]))["loyalty_points"] == 0


async def test_redeem_more_than_balance_is_409_and_changes_nothing(api):
    customer = await with_points(api, 50)
    before = await snapshot(api, customer["id"])
    body = await problem(await api.post(redeem_path(customer["id"]), json={"points": 51}), 409)
    assert "50" in body["detail"]
    assert await snapshot(api, customer["id"]) == before


async def test_redeem_follows_point_value_setting(api):
    customer = await with_points(api, 100)
    await api.ok("PATCH", SETTINGS, json={"point_value": 25})
    body = await api.ok("POST", redeem_path(customer["id"]), json={"points": 40})
    assert body == {"redeemed": 40, "discount_amount": 1000, "remaining_points": 60}


@pytest.mark.parametrize(
    "body",
    [
        {"points": 0},
        {"points": -10},
        {"points": 10.5},
        {"points": "10"},
        {"points": True},
        {"points": None},
        {},
        {"points": 10, "sale_id": "not-a-uuid"},
        {"points": 10, "discount": 100},
        [10],
    ],
    ids=repr,
)
async def test_bad_redeem_is_422_and_changes_nothing(api, body):
    customer = await with_points(api, 100)
    before = await snapshot(api, customer["id"])
    await problem(await api.post(redeem_path(customer["id"]), json=body), 422)
    assert await snapshot(api, customer["id"]) == before


async def test_redeem_for_unknown_customer_is_404(api):
    missing = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    await problem(await api.post(redeem_path(missing), json={"points": 1}), 404)


# -- redeeming on a sale ----------------------------------------------------------------------


async def test_redeem_on_cash_sale_records_discount_on_the_sale(api):
    customer = await with_points(api, 200)
    sale = await api.sale(customer["id"], 5000)  # +50 points
    body = await api.ok(
        "POST", redeem_path(customer["id"]), json={"points": 100, "sale_id": sale["id"]}
    )
    assert (body["redeemed"], body["discount_amount"]) == (100, 1000)
    # (How many of the 50 points earned on the sale remain is pinned further down.)
    assert body["remaining_points"] == (await api.get_customer(customer["id"]))["loyalty_points"]
    assert body["remaining_points"] <= 150
    shown = await api.ok("GET", f"/api/v1/sales/{sale['id']}")
    assert shown["discount_amount"] == 1000
    assert shown["points_redeemed"] == 100
    assert shown["amount_paid"] == 4000
    after = await api.get_customer(customer["id"])
    assert after["total_spent"] == 20000 + 4000
    assert after["ledger_balance"] == 0
    assert await ledger(api, customer["id"]) == []


async def test_redeem_on_account_sale_credits_the_ledger(api):
    customer = await with_points(api, 200)
    sale = await api.sale(customer["id"], 5000, "account")
    await api.ok("POST", redeem_path(customer["id"]), json={"points": 100, "sale_id": sale["id"]})
    after = await api.get_customer(customer["id"])
    assert after["ledger_balance"] == -4000
    credit, debit = await ledger(api, customer["id"])
    assert debit["description"] == f"Sale {sale['receipt_number']}"
    assert credit["type"] == "credit"
    assert credit["amount"] == 1000
    assert credit["balance_after"] == -4000
    assert credit["reference_id"] == sale["id"]
    assert sale["receipt_number"] in credit["description"]

    # A full refund now gives back only what is still owed, and the points.
    result = await api.ok("POST", f"/api/v1/sales/{sale['id']}/refund", 201)
    assert result["amount"] == 4000
    after = await api.get_customer(customer["id"])
    assert after["ledger_balance"] == 0
    assert after["loyalty_points"] == 200


async def test_redeem_after_the_sale_earns_like_redeem_at_the_till(api):
    """Points are earned on the amount paid, whether the discount came at the till or after.

    Redeeming 100 points (1000 off) on a 10000 sale leaves 9000 paid, worth 90 points. It
    must not matter whether the points went in the sale request or in a redemption naming
    the sale a minute later.
    """
    at_till = await with_points(api, 200, "At the till")
    await api.sale(at_till["id"], 10000, "account", redeem_points=100)

    after = await with_points(api, 200, "Afterwards")
    sale = await api.sale(after["id"], 10000, "account")
    await api.ok("POST", redeem_path(after["id"]), json={"points": 100, "sale_id": sale["id"]})

    keys = ("loyalty_points", "total_spent", "total_orders", "ledger_balance")
    first = await api.get_customer(at_till["id"])
    second = await api.get_customer(after["id"])
    assert {k: first[k] for k in keys} == {
        "loyalty_points": 190,
        "total_spent": 29000,
        "total_orders": 2,
        "ledger_balance": -9000,
    }
    assert {k: second[k] for k in keys} == {k: first[k] for k in keys}


async def test_redeem_on_sale_of_another_customer_is_404(api):
    jane = await with_points(api, 100, "Jane")
    john = await with_points(api, 100, "John")
    johns_sale = await api.sale(john["id"], 5000, "account")
    before_jane, before_john = await snapshot(api, jane["id"]), await snapshot(api, john["id"])
    response = await api.post(
        redeem_path(jane["id"]), json={"points": 10, "sale_id": johns_sale["id"]}
    )
    await problem(response, 404)
    missing = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    await problem(
        await api.post(redeem_path(jane["id"]), json={"points": 10, "sale_id": missing}), 404
    )
    assert await snapshot(api, jane["id"]) == before_jane
    assert await snapshot(api, john["id"]) == before_john
    assert (await api.ok("GET", f"/api/v1/sales/{johns_sale['id']}"))["discount_amount"] == 0


async def test_redeem_discount_bigger_than_what_is_left_on_sale_is_422(api):
    customer = await with_points(api, 500)
    sale = await api.sale(customer["id"], 3000, "account")
    await api.ok("POST", f"/api/v1/sales/{sale['id']}/refund", 201, json={"amount": 1000})
    before = await snapshot(api, customer["id"])
    body = {"points": 201, "sale_id": sale["id"]}  # 2010 off, only 2000 left to pay
    await problem(await api.post(redeem_path(customer["id"]), json=body), 422)
    assert await snapshot(api, customer["id"]) == before
    ok = await api.ok(
        "POST", redeem_path(customer["id"]), json={"points": 200, "sale_id": sale["id"]}
    )
    assert ok["discount_amount"] == 2000
    after = await api.get_customer(customer["id"])
    assert after["ledger_balance"] == 0  # 3000 owed - 1000 refunded - 2000 discount


# -- loyalty report ---------------------------------------------------------------------------


async def test_loyalty_report(api):
    jane = await with_points(api, 100, "Jane")  # earned 100
    john = await api.customer("John")
    sale = await api.sale(john["id"], 5000)  # earned 50
    await api.ok("POST", redeem_path(jane["id"]), json={"points": 30})  # redeemed 30
    await api.ok("POST", f"/api/v1/sales/{sale['id']}/refund", 201, json={"amount": 2500})  # -25

    report = await api.ok("GET", LOYALTY_REPORT)
    assert report["points_outstanding"] == 70 + 25
    assert report["outstanding_value"] == 95 * 10
    assert report["point_value"] == 10
    assert report["currency"] == "USD"
    assert report["points_earned"] == 150
    assert report["points_redeemed"] == 30
    assert report["points_reversed_by_refunds"] == 25
    assert report["points_restored_by_refunds"] == 0

    await api.ok("PATCH", SETTINGS, json={"point_value": 25})
    assert (await api.ok("GET", LOYALTY_REPORT))["outstanding_value"] == 95 * 25

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    later = await api.ok("GET", f"{LOYALTY_REPORT}?from={tomorrow}")
    assert later["points_outstanding"] == 95  # a balance, not a movement
    assert (later["points_earned"], later["points_redeemed"]) == (0, 0)
    today = datetime.now(UTC).date()
    assert (await api.ok("GET", f"{LOYALTY_REPORT}?from={today}&to={today}"))[
        "points_earned"
    ] == 150
    await problem(await api.get(f"{LOYALTY_REPORT}?from=soon"), 422)


async def test_loyalty_report_leaves_out_points_nobody_can_redeem(api):
    """Points outstanding are the shop's liability: a deleted customer can never redeem.

    Deleting a customer with history anonymizes them, and their points can no longer be
    redeemed (their redeem endpoint is a 404), so those points are no longer owed.
    """
    keeps = await with_points(api, 70, "Keeps shopping")
    leaves = await with_points(api, 100, "Leaves")
    assert (await api.ok("GET", LOYALTY_REPORT))["points_outstanding"] == 170
    await api.ok("DELETE", f"/api/v1/customers/{leaves['id']}")
    await problem(await api.post(redeem_path(leaves["id"]), json={"points": 1}), 404)
    report = await api.ok("GET", LOYALTY_REPORT)
    assert report["points_outstanding"] == 70
    assert report["outstanding_value"] == 700
    assert (await api.get_customer(keeps["id"]))["loyalty_points"] == 70


# -- receivables with ageing ------------------------------------------------------------------


def backdate_ledger_entry_in_db(db_path: Path, entry_id: str, days: float) -> None:
    """TEST-ONLY: move one ledger entry's created_at into the past by editing the SQLite file.

    The API cannot record entries in the past, and the ageing report is about old debts.
    Only the timestamp changes; amounts and the cached balance stay consistent.
    """
    moment = datetime.now(UTC) - timedelta(days=days)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    with closing(sqlite3.connect(db_path, timeout=10)) as conn, conn:
        changed = conn.execute(
            "UPDATE ledger_entry SET created_at = ? WHERE id = ?", (stamp, entry_id)
        ).rowcount
    assert changed == 1


@pytest.fixture
def db_path(node_env) -> Path:
    return Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"


async def test_receivables_ageing_buckets_and_payments_oldest_first(api, db_path):
    empty = await api.ok("GET", RECEIVABLES)
    assert empty["total_owed"] == 0
    assert empty["customers"] == []

    anna = await api.customer("Anna")
    old = await debit(api, anna["id"], 10000)
    middle = await debit(api, anna["id"], 5000)
    await debit(api, anna["id"], 2000)
    backdate_ledger_entry_in_db(db_path, old["id"], 100)
    backdate_ledger_entry_in_db(db_path, middle["id"], 45)
    await api.pay(anna["id"], 12000)  # pays off the 100-day debt and 2000 of the 45-day one

    dev = await api.customer("Dev")
    aged = await debit(api, dev["id"], 7000)
    backdate_ledger_entry_in_db(db_path, aged["id"], 75)

    edge = await api.customer("Edge")
    thirty = await debit(api, edge["id"], 300)
    backdate_ledger_entry_in_db(db_path, thirty["id"], 30.04)  # 30 days and an hour: 0-30

    settled = await api.customer("Settled")
    await debit(api, settled["id"], 900)
    await api.pay(settled["id"], 900)
    in_credit = await api.customer("In credit")
    await api.pay(in_credit["id"], 5000)

    report = await api.ok("GET", RECEIVABLES)
    assert report["currency"] == "USD"
    assert report["total_owed"] == 5000 + 7000 + 300
    assert report["customers_owing"] == 3
    assert report["buckets"] == {"0-30": 2300, "31-60": 3000, "61-90": 7000, "90+": 0}
    assert [c["name"] for c in report["customers"]] == ["Dev", "Anna", "Edge"]  # most owed first

    by_name = {c["name"]: c for c in report["customers"]}
    assert by_name["Anna"]["owed"] == 5000
    assert by_name["Anna"]["buckets"] == {"0-30": 2000, "31-60": 3000, "61-90": 0, "90+": 0}
    assert by_name["Anna"]["age_days"] == 45
    assert by_name["Anna"]["bucket"] == "31-60"
    anna_entries = {e["id"]: e for e in await ledger(api, anna["id"])}
    assert by_name["Anna"]["oldest_unpaid_at"] == anna_entries[middle["id"]]["created_at"]
    assert by_name["Dev"]["bucket"] == "61-90"
    assert by_name["Dev"]["buckets"]["61-90"] == 7000
    assert by_name["Edge"]["bucket"] == "0-30"

    # Backdating re-orders the running balance: the oldest entry now comes first.
    assert [e["balance_after"] for e in await ledger(api, anna["id"])] == [
        -5000, -17000, -15000, -10000,
    ]  # fmt: skip
    assert (await api.get_customer(anna["id"]))["ledger_balance"] == -5000

    top = await api.ok("GET", f"{RECEIVABLES}?limit=1")
    assert [c["name"] for c in top["customers"]] == ["Dev"]
    assert top["total_owed"] == 12300  # totals still cover everyone

    await api.pay(anna["id"], 3000)  # clears the 45-day debt; the newest 2000 remains
    anna_now = next(
        c for c in (await api.ok("GET", RECEIVABLES))["customers"] if c["name"] == "Anna"
    )
    assert anna_now["buckets"] == {"0-30": 2000, "31-60": 0, "61-90": 0, "90+": 0}
    assert anna_now["bucket"] == "0-30"


async def test_receivables_very_old_debt_is_90_plus(api, db_path):
    customer = await api.customer("Old debt")
    entry = await debit(api, customer["id"], 4200)
    backdate_ledger_entry_in_db(db_path, entry["id"], 400)
    report = await api.ok("GET", RECEIVABLES)
    assert report["buckets"]["90+"] == 4200
    assert report["customers"][0]["age_days"] == 400


async def test_reversed_mistake_does_not_pay_off_an_old_debt(api, db_path):
    """A debit entered by mistake and reversed never existed for ageing purposes.

    The reversal's credit cancels the mistaken debit; it is not a payment to apply to the
    customer's oldest debt, so the 100-day-old debt stays whole in 90+.
    """
    customer = await api.customer("Old debt")
    old = await debit(api, customer["id"], 10000)
    backdate_ledger_entry_in_db(db_path, old["id"], 100)
    mistake = await debit(api, customer["id"], 3000)
    await api.ok("POST", f"/api/v1/customers/{customer['id']}/ledger/{mistake['id']}/reverse", 201)
    [row] = (await api.ok("GET", RECEIVABLES))["customers"]
    assert row["owed"] == 10000
    assert row["buckets"] == {"0-30": 0, "31-60": 0, "61-90": 0, "90+": 10000}
    assert row["bucket"] == "90+"


async def test_bounced_payment_does_not_make_an_old_debt_look_new(api, db_path):
    """A payment that is reversed (bounced cheque) leaves the old debt as old as it was."""
    customer = await api.customer("Bounced")
    old = await debit(api, customer["id"], 10000)
    backdate_ledger_entry_in_db(db_path, old["id"], 100)
    cheque = await api.pay(customer["id"], 10000, description="Cheque 0042")
    await api.ok("POST", f"/api/v1/customers/{customer['id']}/ledger/{cheque['id']}/reverse", 201)
    [row] = (await api.ok("GET", RECEIVABLES))["customers"]
    assert row["owed"] == 10000
    assert row["bucket"] == "90+"
    assert row["age_days"] == 100
    assert row["buckets"]["90+"] == 10000


async def test_refunded_account_sale_does_not_pay_off_an_old_debt(api, db_path):
    """Goods bought on account today and returned today cancel today's debt, not an old one."""
    customer = await api.customer("Returns things")
    old = await debit(api, customer["id"], 10000)
    backdate_ledger_entry_in_db(db_path, old["id"], 100)
    sale = await api.sale(customer["id"], 4000, "account")
    await api.ok("POST", f"/api/v1/sales/{sale['id']}/refund", 201)
    [row] = (await api.ok("GET", RECEIVABLES))["customers"]
    assert row["owed"] == 10000
    assert row["buckets"] == {"0-30": 0, "31-60": 0, "61-90": 0, "90+": 10000}


async def test_deleting_a_customer_who_owes_does_not_strand_the_debt(api):
    """A debt listed in the receivables report must stay collectable.

    Deleting a customer with history anonymizes them. If they still owe, either the delete
    is refused, or the owner can still record the payment when it comes in; otherwise the
    report shows money owed by "Deleted customer" that nothing can ever clear.
    """
    customer = await api.customer("Owes us")
    await debit(api, customer["id"], 5000)
    response = await api.delete(f"/api/v1/customers/{customer['id']}")
    if response.status == 409:
        assert (await api.get_customer(customer["id"]))["ledger_balance"] == -5000
        return
    assert response.status == 200
    report = await api.ok("GET", RECEIVABLES)
    if report["total_owed"] == 0:
        return  # written off
    payment = await api.post(
        f"/api/v1/customers/{customer['id']}/ledger", json={"type": "credit", "amount": 5000}
    )
    assert payment.status == 201, await payment.text()
    assert (await api.ok("GET", RECEIVABLES))["total_owed"] == 0


async def test_late_redemption_keeps_the_points_the_smaller_total_earns(api):
    customer = await api.customer("Small Sale")
    await api.pay(customer["id"], 1)  # history, irrelevant to points
    sale = await api.sale(customer["id"], 150)  # 1.50 earns 1 point
    await api.sale(customer["id"], 10000)  # 100 more points to redeem with
    before = (await api.get_customer(customer["id"]))["loyalty_points"]
    assert before == 101
    redeemed = await api.ok("POST", f"/api/v1/customers/{customer['id']}/loyalty/redeem",
                            json={"points": 5, "sale_id": sale["id"]})  # fmt: skip
    # 1.50 - 0.50 = 1.00 still earns 1 point: nothing taken back beyond the 5 redeemed.
    assert redeemed["remaining_points"] == 96
    assert (await api.ok("GET", f"/api/v1/sales/{sale['id']}"))["points_earned"] == 1
