"""A write whose change central would refuse is refused where it is made, with the field to
blame, and changes nothing: such a change would stop every later push of the shop for good.

The API and CSV import validate as the protocol does, so today nothing they take is refused
(test_fuzz.py checks every change a fuzzed node logged). These tests make the protocol
stricter than the API, as a future rule could, and check the last word still holds.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from node import changes, csvio, customers, db
from node.clock import uuid7
from node.errors import Invalid
from sync import protocol
from sync.protocol import ProtocolError, check_change

MARK = "refuse-me"
TOTAL = 4242


@pytest.fixture
def stricter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Central refuses a customer whose notes hold MARK, a ledger entry whose description
    does and a sale of TOTAL, naming the field as check_body names it."""
    check_body = protocol.check_body

    def stricter_check(kind: str, entity_id: str, body: Any) -> dict[str, Any]:
        for table, field in (("customer", "notes"), ("ledger_entry", "description"),
                             ("sale", "total")):  # fmt: skip
            for index, row in enumerate(body.get(table, ())):
                if MARK in str(row.get(field)) or row.get(field) == TOTAL:
                    raise ProtocolError("is refused here", f"body.{table}[{index}].{field}")
        if MARK in str(body.get("fields", {}).get("notes")):
            raise ProtocolError("is refused here", "body.fields.notes")
        return check_body(kind, entity_id, body)

    monkeypatch.setattr(changes, "check_body", stricter_check)


def logged(data_dir: Path) -> list[tuple[str, int]]:
    with closing(sqlite3.connect(f"file:{data_dir / 'shop.db'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT kind, origin_seq FROM change_log "
                            "ORDER BY origin_seq").fetchall()  # fmt: skip


async def test_api_writes_central_would_refuse_are_422_and_change_nothing(
    api, node_env, stricter
) -> None:
    data_dir = Path(node_env["SHOPNODE_NODE_DATA_DIR"])
    asha = await api.customer("Asha")
    before = logged(data_dir)

    for method, path, body in (
        ("POST", "/api/v1/customers", {"name": "Ravi", "notes": f"say {MARK}"}),
        ("PATCH", f"/api/v1/customers/{asha['id']}", {"notes": MARK}),
        ("POST", f"/api/v1/customers/{asha['id']}/ledger",
         {"type": "credit", "amount": 500, "description": MARK}),
        ("POST", "/api/v1/sales", {"customer_id": asha["id"], "total": TOTAL,
                                   "payment_method": "account"}),
    ):  # fmt: skip
        response = await api.request(method, path, json=body)
        problem = await response.json()
        assert response.status == 422, problem
        assert response.content_type == "application/problem+json"
        field = "description" if "ledger" in path else "total" if "sales" in path else "notes"
        assert [e["field"] for e in problem["errors"]] == [field], problem
        assert "not a value every shop can take" in problem["errors"][0]["message"]

    # Nothing of them: no customer, no edit, no payment, no change, no balance moved.
    assert logged(data_dir) == before
    listed = await api.ok("GET", "/api/v1/customers")
    assert [c["name"] for c in listed] == ["Asha"]
    held = await api.get_customer(asha["id"])
    assert (held["notes"], held["ledger_balance"], held["loyalty_points"],
            held["total_spent"], held["total_orders"]) == (None, 0, 0, 0, 0)  # fmt: skip
    assert await api.ok("GET", f"/api/v1/customers/{asha['id']}/sales") == []

    # The shop goes on: the next writes are logged with gap-free sequence numbers.
    await api.pay(asha["id"], 700)
    await api.customer("Ravi", notes="fine")
    after = logged(data_dir)
    assert [kind for kind, _ in after[len(before):]] == ["ledger.credit", "customer.created"]
    assert [seq for _, seq in after] == list(range(1, len(after) + 1))


def test_an_import_rejects_the_rows_central_would_refuse(tmp_path, stricter) -> None:
    source = tmp_path / "people.csv"
    source.write_text(f"name,notes\nAsha,regular\nRavi,{MARK}\nLi,\n")
    db.open_database(tmp_path / "shop.db")
    try:
        report = csvio.import_customers(source)
        names = [r["name"] for r in db.fetch_all("SELECT name FROM customer ORDER BY name")]
        kinds = [r["kind"] for r in db.fetch_all("SELECT kind FROM change_log")]
    finally:
        db.database.close()
    assert report["imported"] == 2
    assert report["rejected"] == [
        {"row": 3, "reason": "notes: is refused here: not a value every shop can take"}
    ]
    assert names == ["Asha", "Li"] and kinds == ["customer.created"] * 2


def test_bulk_creation_stores_nothing_if_central_would_refuse_one(tmp_path, stricter) -> None:
    db.open_database(tmp_path / "shop.db")
    try:
        with pytest.raises(Invalid) as refused, db.database.atomic():
            customers.create_customers([{"name": "Asha"}, {"name": "Ravi", "notes": MARK}])
        count = db.fetch_value("SELECT COUNT(*) FROM customer")
        logged = db.fetch_value("SELECT COUNT(*) FROM change_log")
    finally:
        db.database.close()
    assert refused.value.errors[0][0] == "notes"
    assert (count, logged) == (0, 0)


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        # A field the request did not name (the node's own) is blamed on the body, with
        # where it is in the message.
        ("customer.created", {"customer": [{"name": "x"}]}, "body"),
        ("customer.updated", {"customer_id": "{id}", "fields": {"notes": "a\x00b"}}, "notes"),
        ("ledger.credit", "not json", "body"),
        ("customer.updated", {"customer_id": "{id}", "fields": {"notes": "x" * 70_000}}, "body"),
    ],
)
def test_unsyncable_names_the_field_the_protocol_names(kind, body, field) -> None:
    entity_id = uuid7()
    text = body if isinstance(body, str) else changes.encode_body(body).replace("{id}", entity_id)
    refused = changes.unsyncable(kind, entity_id, text)
    assert refused is not None and [f for f, _ in refused.errors] == [field]


def test_a_good_change_passes_both_checks() -> None:
    customer = uuid7()
    body = changes.encode_body({"customer_id": customer, "fields": {"notes": "Zoë's friend"}})
    assert changes.unsyncable("customer.updated", customer, body) is None
    origin = uuid7()
    change = {"id": uuid7(), "origin": origin, "origin_seq": 1,
              "hlc": f"{1_750_000_000_000:015d}-000000-{origin}", "kind": "customer.updated",
              "entity_id": customer, "body": body,
              "recorded_at": "2025-06-01T10:00:00.000Z"}  # fmt: skip
    check_change(change)
