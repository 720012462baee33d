"""Customers API: the seed's shapes, validation, search, paging, delete vs anonymize."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

SEED_LIST_FIELDS = {
    "id", "name", "email", "phone", "address", "loyalty_points", "total_spent",
    "total_orders", "notes", "tags", "created_at",
}  # fmt: skip
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

JANE = {
    "name": "Jane Doe",
    "email": "jane@example.com",
    "phone": "+1234567890",
    "address": "123 Main St, City",
    "notes": "Referred by John",
    "tags": ["retail"],
}


async def test_create_returns_the_seed_shape(api):
    created = await api.ok("POST", "/api/v1/customers", 201, json=JANE)
    assert UUID7.fullmatch(created["id"])
    assert RFC3339.fullmatch(created["created_at"])
    for key in ("name", "email", "phone", "address", "notes", "tags"):
        assert created[key] == JANE[key]
    assert created["loyalty_points"] == 0
    assert created["total_spent"] == 0
    assert created["total_orders"] == 0


async def test_get_has_every_seed_field_with_types(api):
    created = await api.customer(**{k: v for k, v in JANE.items() if k != "name"})
    got = await api.get_customer(created["id"])
    assert SEED_LIST_FIELDS | {"recent_purchases", "ledger_balance"} <= set(got)
    assert got["recent_purchases"] == []
    assert got["ledger_balance"] == 0
    assert isinstance(got["tags"], list)


async def test_list_items_have_the_seed_fields(api):
    await api.customer(**{k: v for k, v in JANE.items() if k != "name"})
    rows = await api.ok("GET", "/api/v1/customers")
    assert len(rows) == 1 and SEED_LIST_FIELDS <= set(rows[0])


async def test_list_items_are_the_customers_as_get_renders_them(api):
    # The list's JSON is written by SQLite (node.customers.JSON_ROW), GET's by Python: the
    # same objects, for text that JSON must escape and for every kind of value.
    await api.customer(
        'Zoë "Q" O\'Brien \\ 東京 😀', email="zoe@example.com", phone="+44 20 7946 0958",
        address="Straße 1\nFlat 2", notes="tab\there, quote \" and \u2028 and \x7f",
        tags=["vip", "café", 'a"b'], credit_limit=5000,
    )  # fmt: skip
    await api.customer("Ann")
    for params in ({}, {"search": "zoë"}, {"search": "2079"}, {"search": "an"}):
        rows = await api.ok("GET", "/api/v1/customers", params=params)
        assert rows, params
        for row in rows:
            got = await api.get_customer(row["id"])
            del got["recent_purchases"]
            assert list(row.items()) == list(got.items()), params


async def test_only_name_is_required_and_it_is_trimmed(api):
    created = await api.ok("POST", "/api/v1/customers", 201, json={"name": "  Ravi  "})
    assert created["name"] == "Ravi"
    assert created["email"] is None and created["phone"] is None and created["tags"] == []


async def test_phone_is_normalized_and_email_domain_lowercased(api):
    created = await api.customer(phone="+1 (234) 567-890", email="Jane@EXAMPLE.com")
    assert created["phone"] == "+1234567890"
    assert created["email"] == "Jane@example.com"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "email": 7}, "email"),
        ({"name": "A", "phone": "call me"}, "phone"),
        ({"name": "A", "phone": "12"}, "phone"),
        ({"name": "A", "tags": "vip"}, "tags"),
        ({"name": "A", "tags": [1]}, "tags"),
        ({"name": "A", "tags": ["x" * 51]}, "tags"),
        ({"name": "A", "emial": "typo@example.com"}, "emial"),
        ({"name": "A", "loyalty_points": 1000}, "loyalty_points"),
        ({"name": "A", "credit_limit": -1}, "credit_limit"),
    ],
)
async def test_create_validation_errors_name_the_field_and_create_nothing(api, body, field):
    response = await api.post("/api/v1/customers", json=body)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json(content_type=None)
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem["errors"]]
    assert await api.ok("GET", "/api/v1/customers") == []


async def test_patch_is_partial_and_replaces_tags(api):
    created = await api.customer(**{k: v for k, v in JANE.items() if k != "name"})
    created_tags = await api.ok(
        "PATCH", f"/api/v1/customers/{created['id']}", json={"tags": ["vip", "wholesale"]}
    )
    assert created_tags["tags"] == ["vip", "wholesale"]
    updated = await api.ok(
        "PATCH",
        f"/api/v1/customers/{created['id']}",
        json={"name": "Jane Smith", "phone": "+0987654321", "tags": ["vip"]},
    )
    assert updated["name"] == "Jane Smith"
    assert updated["phone"] == "+0987654321"
    assert updated["tags"] == ["vip"]  # replaced, not merged
    assert updated["email"] == JANE["email"] and updated["address"] == JANE["address"]


async def test_put_is_accepted_as_patch_and_null_clears_optional_fields(api):
    created = await api.customer(email="a@example.com", notes="x")
    updated = await api.ok(
        "PUT", f"/api/v1/customers/{created['id']}", json={"email": None, "notes": ""}
    )
    assert updated["email"] is None and updated["notes"] is None
    assert updated["name"] == created["name"]


async def test_patch_errors(api):
    created = await api.customer()
    path = f"/api/v1/customers/{created['id']}"
    for body in ({}, {"name": None}, {"name": ""}, {"total_spent": 5}, [1]):
        response = await api.patch(path, json=body)
        assert response.status == 422, body
    assert (await api.get_customer(created["id"]))["name"] == created["name"]
    missing = await api.patch("/api/v1/customers/01900000-0000-7000-8000-000000000000",
                              json={"name": "X"})  # fmt: skip
    assert missing.status == 404


async def test_search_by_name_email_and_phone(api):
    jane = await api.customer("Jane Doe", email="jane@example.com", phone="+1 (234) 567-890")
    await api.customer("Ravi Kumar", email="ravi@shop.in", phone="+91 98765 43210")

    async def found(term: str) -> list[str]:
        rows = await api.ok("GET", "/api/v1/customers", params={"search": term})
        return [r["name"] for r in rows]

    assert await found("jane") == ["Jane Doe"]
    assert await found("JANE D") == ["Jane Doe"]
    assert await found("oe") == ["Jane Doe"]  # short terms work too
    assert await found("example.c") == ["Jane Doe"]
    assert await found("234567") == ["Jane Doe"]  # phone search ignores formatting
    assert await found("234-567") == ["Jane Doe"]
    assert await found("98765 432") == ["Ravi Kumar"]
    assert sorted(await found("a")) == ["Jane Doe", "Ravi Kumar"]
    assert await found("zzz") == []
    rows = await api.ok("GET", "/api/v1/customers", params={"search": "jane"})
    assert rows[0]["id"] == jane["id"]


async def test_search_treats_percent_and_underscore_literally(api):
    await api.customer("100% Organic")
    await api.customer("Plain Shop")
    await api.customer("snake_case")
    await api.customer("snakeXcase")
    for term, expected in [("0%", ["100% Organic"]), ("%", ["100% Organic"]),
                           ("e_c", ["snake_case"]), ("_", ["snake_case"]),
                           ('"', [])]:  # fmt: skip
        rows = await api.ok("GET", "/api/v1/customers", params={"search": term})
        assert [r["name"] for r in rows] == expected, term


async def test_paging_never_repeats_or_skips_with_ties(api, node_env):
    # 45 customers with equal total_spent: only the id tie-break keeps pages stable.
    ids = {(await api.customer(f"C{i:02d}"))["id"] for i in range(45)}
    for sort in ("total_spent", "name", "created_at", "loyalty_points"):
        for order in ("asc", "DESC"):
            seen: list[str] = []
            for page in (1, 2, 3):
                response = await api.get(
                    "/api/v1/customers",
                    params={"page": page, "limit": 20, "sort": sort, "order": order},
                )
                assert response.headers["X-Total-Count"] == "45"
                seen += [r["id"] for r in await response.json()]
            assert len(seen) == 45 and set(seen) == ids, (sort, order)


async def test_link_headers_and_limit_cap(api):
    for i in range(5):
        await api.customer(f"C{i}")
    first = await api.get("/api/v1/customers", params={"limit": 2})
    assert 'rel="next"' in first.headers["Link"] and 'rel="prev"' not in first.headers["Link"]
    assert "page=2" in first.headers["Link"]
    last = await api.get("/api/v1/customers", params={"limit": 2, "page": 3})
    assert 'rel="prev"' in last.headers["Link"] and 'rel="next"' not in last.headers["Link"]
    assert len(await last.json()) == 1
    assert (await api.get("/api/v1/customers", params={"limit": 101})).status == 422
    assert len(await api.ok("GET", "/api/v1/customers", params={"limit": 100})) == 5


async def test_sorting(api):
    await api.customer("bob")
    await api.customer("Alice")
    await api.customer("carol")
    rows = await api.ok("GET", "/api/v1/customers", params={"sort": "name"})
    assert [r["name"] for r in rows] == ["Alice", "bob", "carol"]  # case-insensitive
    rows = await api.ok("GET", "/api/v1/customers", params={"sort": "name", "order": "desc"})
    assert [r["name"] for r in rows] == ["carol", "bob", "Alice"]
    rows = await api.ok("GET", "/api/v1/customers", params={"sort": "created_at", "order": "ASC"})
    assert [r["name"] for r in rows] == ["bob", "Alice", "carol"]


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "x"}, {"limit": "0"}, {"limit": "-5"}, {"sort": "email"},
     {"order": "up"}],
)  # fmt: skip
async def test_bad_list_parameters_are_422(api, params):
    response = await api.get("/api/v1/customers", params=params)
    assert response.status == 422
    problem = await response.json(content_type=None)
    assert problem["errors"][0]["field"] == next(iter(params))


async def test_delete_without_history_removes_the_customer(api, node_env):
    created = await api.customer("Gone Soon", email="gone@example.com")
    body = await api.ok("DELETE", f"/api/v1/customers/{created['id']}")
    assert body == {"message": "Customer deleted successfully"}
    assert (await api.get(f"/api/v1/customers/{created['id']}")).status == 404
    db = Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM customer").fetchone()[0] == 0


async def test_delete_with_history_anonymizes_and_keeps_history(api, node_env):
    created = await api.customer(
        "Jane Doe", email="jane@example.com", phone="+1234567890", address="1 Road", notes="n",
        tags=["vip"],
    )
    sale = await api.sale(created["id"], 4500, "account")
    refused = await api.delete(f"/api/v1/customers/{created['id']}")
    assert refused.status == 409  # owes 4500: settle first, or the debt could never be paid
    assert "owes 4500" in (await refused.json(content_type=None))["detail"]
    await api.pay(created["id"], 4500)
    body = await api.ok("DELETE", f"/api/v1/customers/{created['id']}")
    assert body == {"message": "Customer deleted successfully"}
    assert (await api.get(f"/api/v1/customers/{created['id']}")).status == 404
    for term in ("jane", "example", "234567"):
        assert await api.ok("GET", "/api/v1/customers", params={"search": term}) == []
    assert await api.ok("GET", "/api/v1/customers") == []
    # The sale and its ledger debit are still there, under the same ids.
    assert (await api.ok("GET", f"/api/v1/sales/{sale['id']}"))["customer_id"] == created["id"]
    db = Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT name, email, phone, phone_digits, address, notes, tags, anonymized_at "
            "FROM customer WHERE id = ?",
            (created["id"],),
        ).fetchone()
        entries = conn.execute(
            "SELECT COUNT(*) FROM ledger_entry WHERE customer_id = ?", (created["id"],)
        ).fetchone()[0]
    assert row[0] != "Jane Doe" and row[1:6] == (None,) * 5 and row[6] == "[]" and row[7]
    assert entries == 2
    assert (await api.delete(f"/api/v1/customers/{created['id']}")).status == 404


async def test_staff_cannot_delete(api):
    created = await api.customer()
    response = await api.delete(f"/api/v1/customers/{created['id']}", staff=True)
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert (await api.get_customer(created["id"]))["name"] == created["name"]


async def test_recent_purchases_and_ledger_balance_follow_sales(api):
    created = await api.customer()
    sale = await api.sale(created["id"], 4500, "account")
    got = await api.get_customer(created["id"])
    assert got["recent_purchases"] == [{
        "id": sale["id"], "receipt_number": sale["receipt_number"], "total": 4500,
        "created_at": sale["created_at"],
    }]  # fmt: skip
    assert got["ledger_balance"] == -4500
