"""The khata (customer ledger) through the HTTP API: entries, balances, limits, reversals."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from tests.node.conftest import CUSTOMERS, debit, error_fields, ledger, ledger_path, problem


async def balance(api, customer_id: str) -> int:
    return (await api.get_customer(customer_id))["ledger_balance"]


# -- the seed example -------------------------------------------------------------------------


async def test_seed_example_account_sale_then_payment(api):
    customer = await api.customer()
    sale = await api.sale(customer["id"], 15000, "account")
    payment = await api.pay(customer["id"], 10000)

    assert payment["type"] == "credit"
    assert payment["amount"] == 10000
    assert payment["balance_after"] == -5000
    assert payment["description"] == "Payment received"

    listed = await ledger(api, customer["id"])
    assert [e["type"] for e in listed] == ["credit", "debit"]  # newest first
    assert [e["balance_after"] for e in listed] == [-5000, -15000]
    credit, debit_entry = listed
    assert credit["id"] == payment["id"]
    assert debit_entry["amount"] == 15000
    assert debit_entry["description"] == f"Sale {sale['receipt_number']}"
    assert debit_entry["reference_id"] == sale["id"]
    for entry in listed:
        assert {"id", "type", "amount", "balance_after", "description", "reference_id",
                "created_at"} <= set(entry)  # fmt: skip
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["created_at"])

    assert await balance(api, customer["id"]) == -5000


async def test_payment_keeps_description_and_reference(api):
    customer = await api.customer()
    ref = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    entry = await api.pay(customer["id"], 2500, description="Cash at till 2", reference_id=ref)
    assert entry["description"] == "Cash at till 2"
    assert entry["reference_id"] == ref
    assert entry["balance_after"] == 2500  # a customer can be in credit
    assert await balance(api, customer["id"]) == 2500


async def test_ledger_of_unknown_customer_is_404(api):
    missing = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    await problem(await api.get(ledger_path(missing)), 404)
    response = await api.post(ledger_path(missing), json={"type": "credit", "amount": 100})
    await problem(response, 404)
    await problem(await api.get(f"{CUSTOMERS}/not-a-uuid/ledger"), 400)


async def test_ledger_is_private_to_its_customer(api):
    jane, john = await api.customer("Jane"), await api.customer("John")
    await api.pay(jane["id"], 700)
    assert await ledger(api, john["id"]) == []
    assert await balance(api, john["id"]) == 0


# -- from / to filters ------------------------------------------------------------------------


async def test_from_to_filters_with_dates_are_inclusive_whole_days(api):
    customer = await api.customer()
    entry = await api.pay(customer["id"], 100)
    day = datetime.fromisoformat(entry["created_at"].replace("Z", "+00:00")).date()
    today, yesterday, tomorrow = day, day - timedelta(days=1), day + timedelta(days=1)

    async def ids(query: str) -> list[str]:
        return [e["id"] for e in await ledger(api, customer["id"], query)]

    assert await ids(f"&from={today}") == [entry["id"]]
    assert await ids(f"&to={today}") == [entry["id"]]
    assert await ids(f"&from={today}&to={today}") == [entry["id"]]
    assert await ids(f"&from={yesterday}&to={tomorrow}") == [entry["id"]]
    assert await ids(f"&to={yesterday}") == []
    assert await ids(f"&from={tomorrow}") == []


async def test_from_to_filters_with_rfc3339_times_are_inclusive(api):
    customer = await api.customer()
    first = await api.pay(customer["id"], 100)
    await asyncio.sleep(0.01)
    second = await api.pay(customer["id"], 200)
    assert first["created_at"] < second["created_at"]

    async def ids(query: str) -> list[str]:
        return [e["id"] for e in await ledger(api, customer["id"], query)]

    t1, t2 = first["created_at"], second["created_at"]
    assert await ids(f"&to={t1}") == [first["id"]]
    assert await ids(f"&from={t2}") == [second["id"]]
    assert await ids(f"&from={t1}&to={t2}") == [second["id"], first["id"]]
    assert await ids(f"&from={t1}&to={t1}") == [first["id"]]
    # The same instant written with an offset means the same thing.
    moment = datetime.fromisoformat(t1.replace("Z", "+00:00"))
    shifted = moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert shifted.endswith("+05:30")
    response = await api.get(ledger_path(customer["id"]), params={"to": shifted})
    assert response.status == 200
    assert [e["id"] for e in await response.json()] == [first["id"]]
    # balance_after stays the running balance of the whole ledger, not of the filtered page.
    only_second = await ledger(api, customer["id"], f"&from={t2}")
    assert only_second[0]["balance_after"] == 300


@pytest.mark.parametrize(
    "query",
    [
        "from=yesterday",
        "to=2025-13-01",
        "from=2025-05-18T10:00:00",
        "from=2025-05-19&to=2025-05-18",
    ],
)
async def test_bad_from_to_is_422(api, query):
    customer = await api.customer()
    body = await problem(await api.get(f"{ledger_path(customer['id'])}?{query}"), 422)
    assert error_fields(body) & {"from", "to"}


# -- manual debits ----------------------------------------------------------------------------


async def test_manual_debit_is_owner_only(api):
    customer = await api.customer()
    entry = await debit(api, customer["id"], 4000)
    assert entry["type"] == "debit"
    assert entry["balance_after"] == -4000
    assert entry["description"] == "Manual debit"

    response = await api.post(
        ledger_path(customer["id"]), staff=True, json={"type": "debit", "amount": 1000}
    )
    await problem(response, 403)
    assert len(await ledger(api, customer["id"])) == 1
    assert await balance(api, customer["id"]) == -4000

    # Staff may record payments received.
    response = await api.post(
        ledger_path(customer["id"]), staff=True, json={"type": "credit", "amount": 1500}
    )
    assert response.status == 201
    assert await balance(api, customer["id"]) == -2500


# -- credit limits ----------------------------------------------------------------------------


async def test_customer_credit_limit_refuses_debit_past_it(api):
    customer = await api.customer(credit_limit=10000)
    await debit(api, customer["id"], 6000)

    response = await api.post(ledger_path(customer["id"]), json={"type": "debit", "amount": 5000})
    body = await problem(response, 409)
    assert body["available_credit"] == 4000
    assert len(await ledger(api, customer["id"])) == 1
    assert await balance(api, customer["id"]) == -6000

    await debit(api, customer["id"], 4000)  # exactly up to the limit is fine
    assert await balance(api, customer["id"]) == -10000
    body = await problem(
        await api.post(ledger_path(customer["id"]), json={"type": "debit", "amount": 1}), 409
    )
    assert body["available_credit"] == 0

    await api.pay(customer["id"], 3000)  # paying back frees credit
    await debit(api, customer["id"], 3000)
    assert await balance(api, customer["id"]) == -10000


async def test_credit_in_hand_adds_to_available_credit(api):
    customer = await api.customer(credit_limit=1000)
    await api.pay(customer["id"], 500)
    body = await problem(
        await api.post(ledger_path(customer["id"]), json={"type": "debit", "amount": 1501}), 409
    )
    assert body["available_credit"] == 1500
    await debit(api, customer["id"], 1500)
    assert await balance(api, customer["id"]) == -1000


async def test_default_credit_limit_from_settings(api):
    await api.ok("PATCH", "/api/v1/settings", json={"default_credit_limit": 3000})
    plain = await api.customer("Plain")
    trusted = await api.customer("Trusted", credit_limit=20000)
    cash_only = await api.customer("Cash only", credit_limit=0)

    body = await problem(
        await api.post(ledger_path(plain["id"]), json={"type": "debit", "amount": 3001}), 409
    )
    assert body["available_credit"] == 3000
    await debit(api, plain["id"], 3000)

    await debit(api, trusted["id"], 15000)  # the customer's own limit beats the default

    body = await problem(
        await api.post(ledger_path(cash_only["id"]), json={"type": "debit", "amount": 1}), 409
    )
    assert body["available_credit"] == 0
    assert await ledger(api, cash_only["id"]) == []

    # Back to "no limit": the default no longer applies.
    await api.ok("PATCH", "/api/v1/settings", json={"default_credit_limit": None})
    await debit(api, plain["id"], 50000)
    assert await balance(api, plain["id"]) == -53000


async def test_override_credit_limit_owner_only(api):
    customer = await api.customer(credit_limit=1000)
    entry = await debit(api, customer["id"], 5000, override_credit_limit=True)
    assert entry["balance_after"] == -5000

    body = {"type": "debit", "amount": 100, "override_credit_limit": True}
    await problem(await api.post(ledger_path(customer["id"]), staff=True, json=body), 403)
    sale = {"customer_id": customer["id"], "total": 100, "payment_method": "account",
            "override_credit_limit": True}  # fmt: skip
    await problem(await api.post("/api/v1/sales", staff=True, json=sale), 403)
    assert len(await ledger(api, customer["id"])) == 1
    assert (await api.get_customer(customer["id"]))["total_orders"] == 0


async def test_account_sale_past_limit_is_409_and_records_nothing(api):
    customer = await api.customer(credit_limit=10000)
    body = {"customer_id": customer["id"], "total": 10001, "payment_method": "account"}
    problem_body = await problem(await api.post("/api/v1/sales", json=body), 409)
    assert problem_body["available_credit"] == 10000

    after = await api.get_customer(customer["id"])
    assert after["total_orders"] == 0
    assert after["total_spent"] == 0
    assert after["loyalty_points"] == 0
    assert after["recent_purchases"] == []
    assert await ledger(api, customer["id"]) == []

    # Cash sales are not credit: no limit applies.
    await api.sale(customer["id"], 50000, "cash")
    # The owner may override for a trusted customer.
    sale = await api.sale(customer["id"], 12000, "account", override_credit_limit=True)
    assert (await ledger(api, customer["id"]))[0]["reference_id"] == sale["id"]
    assert await balance(api, customer["id"]) == -12000


# -- reversals --------------------------------------------------------------------------------


def reverse_path(customer_id: str, entry_id: str) -> str:
    return f"{ledger_path(customer_id)}/{entry_id}/reverse"


async def test_reversal_undoes_an_entry_once(api):
    customer = await api.customer()
    await debit(api, customer["id"], 8000)
    wrong = await api.pay(customer["id"], 5000)  # typed 5000 instead of 500
    reversal = await api.ok("POST", reverse_path(customer["id"], wrong["id"]), 201)
    assert reversal["type"] == "debit"
    assert reversal["amount"] == 5000
    assert reversal["balance_after"] == -8000
    assert reversal["reverses_id"] == wrong["id"]
    assert await balance(api, customer["id"]) == -8000

    again = await api.post(reverse_path(customer["id"], wrong["id"]))
    await problem(again, 409)
    of_reversal = await api.post(reverse_path(customer["id"], reversal["id"]))
    await problem(of_reversal, 409)

    listed = await ledger(api, customer["id"])
    assert len(listed) == 3
    assert listed[0]["id"] == reversal["id"]
    assert await balance(api, customer["id"]) == -8000
    # The original stays (append-only): corrected, not erased.
    assert wrong["id"] in {e["id"] for e in listed}


async def test_reversal_of_a_debit_credits(api):
    customer = await api.customer()
    entry = await debit(api, customer["id"], 1234)
    reversal = await api.ok("POST", reverse_path(customer["id"], entry["id"]), 201)
    assert reversal["type"] == "credit"
    assert reversal["balance_after"] == 0
    assert await balance(api, customer["id"]) == 0


async def test_reversal_is_owner_only(api):
    customer = await api.customer()
    entry = await api.pay(customer["id"], 5000)
    await problem(await api.post(reverse_path(customer["id"], entry["id"]), staff=True), 403)
    assert len(await ledger(api, customer["id"])) == 1
    assert await balance(api, customer["id"]) == 5000


async def test_reversal_of_unknown_or_foreign_entry_is_404(api):
    jane, john = await api.customer("Jane"), await api.customer("John")
    entry = await api.pay(jane["id"], 5000)
    await problem(await api.post(reverse_path(john["id"], entry["id"])), 404)
    missing = "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
    await problem(await api.post(reverse_path(jane["id"], missing)), 404)
    assert await ledger(api, john["id"]) == []
    assert await balance(api, jane["id"]) == 5000
    assert len(await ledger(api, jane["id"])) == 1


async def test_sale_debt_cannot_be_cancelled_twice(api):
    """Reversing a sale's debit and then refunding the sale must not credit the customer twice.

    The owner "cancels" an account sale by reversing its debit; later the goods come back and
    the sale is refunded. Whichever of the two the node accepts, the customer must end up
    owing nothing and being owed nothing: they never paid for that sale.
    """
    customer = await api.customer()
    sale = await api.sale(customer["id"], 5000, "account")
    [sale_debit] = await ledger(api, customer["id"])
    reversal = await api.post(reverse_path(customer["id"], sale_debit["id"]))
    assert reversal.status in (201, 409)
    refund = await api.post(f"/api/v1/sales/{sale['id']}/refund")
    assert refund.status in (201, 409)
    assert await balance(api, customer["id"]) == 0


# -- amounts that must be refused ------------------------------------------------------------

BAD_AMOUNTS = [-100, 0, 10.5, 100.0, "100", True, False, None, 10**13, [100], {"value": 100}]
BAD_RAW_AMOUNTS = ["NaN", "Infinity", "-Infinity", "1e400", "1e2", "100000000000000000000000"]


@pytest.mark.parametrize("kind", ["credit", "debit"])
@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
async def test_bad_amount_is_refused_and_nothing_recorded(api, kind, amount):
    customer = await api.customer(credit_limit=None)
    await api.pay(customer["id"], 700)
    response = await api.post(ledger_path(customer["id"]), json={"type": kind, "amount": amount})
    body = await problem(response, 422)
    assert "amount" in error_fields(body)
    assert len(await ledger(api, customer["id"])) == 1
    assert await balance(api, customer["id"]) == 700


@pytest.mark.parametrize("raw", BAD_RAW_AMOUNTS)
async def test_bad_raw_json_amount_is_refused(api, raw):
    customer = await api.customer()
    data = '{"type": "credit", "amount": ' + raw + "}"
    response = await api.post(
        ledger_path(customer["id"]), data=data, headers={"Content-Type": "application/json"}
    )
    body = await problem(response, 422)
    assert "amount" in error_fields(body)
    assert await ledger(api, customer["id"]) == []
    assert await balance(api, customer["id"]) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"type": "credit"},
        {"amount": 100},
        {"type": "refund", "amount": 100},
        {"type": "credit", "amount": 100, "amout": 5},
        {"type": "credit", "amount": 100, "balance_after": 0},
        {"type": "credit", "amount": 100, "reference_id": "abc"},
        {"type": "credit", "amount": 100, "description": 5},
        {"type": "credit", "amount": 100, "override_credit_limit": "yes"},
        [{"type": "credit", "amount": 100}],
        "credit 100",
    ],
    ids=repr,
)
async def test_bad_entry_body_is_422_and_records_nothing(api, body):
    customer = await api.customer()
    problem_body = await problem(await api.post(ledger_path(customer["id"]), json=body), 422)
    if isinstance(body, dict):
        expected = {"amout", "balance_after"} & set(body)
        assert expected <= error_fields(problem_body)
    assert await ledger(api, customer["id"]) == []
    assert await balance(api, customer["id"]) == 0


async def test_unparseable_body_is_a_problem_not_a_500(api):
    customer = await api.customer()
    for data in ["{", "", "\xff\xfe", json.dumps({"type": "credit", "amount": 1})[:-1]]:
        response = await api.post(ledger_path(customer["id"]), data=data.encode("latin-1"))
        assert 400 <= response.status < 500
        await problem(response, response.status)
    assert await ledger(api, customer["id"]) == []


# -- paging -----------------------------------------------------------------------------------


def links(response) -> dict[str, str]:
    found = {}
    for part in response.headers.get("Link", "").split(","):
        match = re.search(r'<([^>]+)>\s*;\s*rel="(\w+)"', part)
        if match:
            found[match.group(2)] = match.group(1)
    return found


async def test_ledger_paging_with_total_count_and_links(api):
    customer = await api.customer()
    made = [await api.pay(customer["id"], 100 * (i + 1)) for i in range(7)]

    response = await api.get(f"{ledger_path(customer['id'])}?limit=3")
    assert response.status == 200
    assert response.headers["X-Total-Count"] == "7"
    first_page = await response.json()
    assert len(first_page) == 3
    assert "next" in links(response) and "prev" not in links(response)

    seen, pages, url = [], 0, f"{ledger_path(customer['id'])}?limit=3"
    while url:
        response = await api.get(url)
        assert response.headers["X-Total-Count"] == "7"
        seen.extend(await response.json())
        pages += 1
        url = links(response).get("next")
        assert pages <= 3
    assert pages == 3
    assert [e["id"] for e in seen] == [e["id"] for e in reversed(made)]
    assert [e["balance_after"] for e in seen] == [2800, 2100, 1500, 1000, 600, 300, 100]

    last = await api.get(f"{ledger_path(customer['id'])}?limit=3&page=3")
    assert "prev" in links(last) and "next" not in links(last)
    back = await api.get(links(last)["prev"])
    assert [e["id"] for e in await back.json()] == [e["id"] for e in seen[3:6]]

    beyond = await api.get(f"{ledger_path(customer['id'])}?limit=3&page=9")
    assert await beyond.json() == []
    assert beyond.headers["X-Total-Count"] == "7"

    for bad in ["limit=0", "limit=abc", "page=0", "page=-1"]:
        await problem(await api.get(f"{ledger_path(customer['id'])}?{bad}"), 422)
