"""Central + three shop nodes as real processes, driven with the CLI as an operator would.

Every test here runs twice: central on SQLite and central on PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import call
from tests.processes import Central, NodeProcess, shopnode
from tests.sync.conftest import Shops, get, post, sync, synced
from tests.sync.faults import raw_push, restart_central, start_shops


def ledger_view(node: NodeProcess, customer_id: str) -> list[tuple]:
    rows = get(node, f"/api/v1/customers/{customer_id}/ledger?limit=100")
    return [(r["id"], r["type"], r["amount"], r["balance_after"]) for r in rows]


def money_view(node: NodeProcess, customer_id: str) -> tuple:
    c = get(node, f"/api/v1/customers/{customer_id}")
    return c["ledger_balance"], c["loyalty_points"], c["total_spent"], c["total_orders"]


def test_customer_created_at_one_shop_is_found_at_another(shops: Shops):
    a, b = start_shops(shops, "shop-a", "shop-b")
    created = post(a, "/api/v1/customers", {"name": "Meera Shah", "phone": "+91 98200 12345"})
    synced(a, b)
    found = get(b, "/api/v1/customers?search=98200")
    assert [c["id"] for c in found] == [created["id"]]
    assert found[0]["name"] == "Meera Shah"


def test_customers_imported_at_one_shop_are_found_at_another(shops: Shops, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    source = tmp_path / "customers.csv"
    source.write_text("name,phone\nMeera Shah,+91 98200 12345\nRavi Kumar,\n")
    imported = shopnode("import", "customers", str(source), env=a.env)  # while shop-a serves
    assert imported.returncode == 0, imported.stderr
    synced(a, b)
    assert sorted(c["name"] for c in get(b, "/api/v1/customers")) == ["Meera Shah", "Ravi Kumar"]
    assert [c["name"] for c in get(b, "/api/v1/customers?search=98200")] == ["Meera Shah"]


def test_offline_sale_and_payment_converge_on_every_node(shops: Shops, tmp_path: Path):
    a, b, c = start_shops(shops, "shop-a", "shop-b", "shop-c")
    customer = post(a, "/api/v1/customers", {"name": "Ravi"})
    synced(a, b, c)
    cid = customer["id"]
    central = shops.central
    assert central.stop() == 0  # central goes down; the shops keep working
    sale = post(a, "/api/v1/sales", {"customer_id": cid, "total": 15000,
                                     "payment_method": "account"})  # fmt: skip
    post(b, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 10000})
    failed = sync(a)
    assert failed.returncode == 1 and "sync failed" in failed.stdout
    status = get(a, "/api/v1/sync/status")
    assert status["push_queue_depth"] == 1 and status["oldest_unsent_age_seconds"] >= 0
    restart_central(central)  # central comes back on the same database and port
    synced(a, b, c, a, b)
    views = {money_view(n, cid) for n in (a, b, c)}
    assert views == {(-5000, 150, 15000, 1)}
    ledgers = [ledger_view(n, cid) for n in (a, b, c)]
    assert ledgers[0] == ledgers[1] == ledgers[2]
    assert [e[3] for e in reversed(ledgers[0])] == [-15000, -5000]
    assert get(c, f"/api/v1/sales/{sale['id']}")["receipt_number"] == sale["receipt_number"]
    assert get(a, "/api/v1/sync/status")["push_queue_depth"] == 0

    # Repeating sync changes nothing.
    before = [(money_view(n, cid), ledger_view(n, cid)) for n in (a, b, c)]
    synced(a, b, c)
    assert [(money_view(n, cid), ledger_view(n, cid)) for n in (a, b, c)] == before
    again = sync(a)
    assert "pushed 0, pulled 0" in again.stdout


def test_later_profile_edit_wins_and_fields_merge(shops: Shops):
    a, b = start_shops(shops, "shop-a", "shop-b")
    cid = post(a, "/api/v1/customers", {"name": "Old Name", "email": "old@example.com"})["id"]
    synced(a, b)
    assert call(a, "PATCH", f"/api/v1/customers/{cid}", {"name": "Edited at A"})[0] == 200
    assert call(b, "PATCH", f"/api/v1/customers/{cid}", {"name": "Edited at B later",
                                                         "email": "b@example.com"})[0] == 200
    assert call(a, "PATCH", f"/api/v1/customers/{cid}", {"notes": "only A set notes"})[0] == 200
    synced(a, b, a)
    views = [get(n, f"/api/v1/customers/{cid}") for n in (a, b)]
    for view in views:
        assert view["name"] == "Edited at B later"
        assert view["email"] == "b@example.com"
        assert view["notes"] == "only A set notes"


def test_anonymization_reaches_every_node_and_central(shops: Shops, central: Central):
    a, b, c = start_shops(shops, "shop-a", "shop-b", "shop-c")
    cid = post(a, "/api/v1/customers", {"name": "Private Person", "email": "pp@example.com",
                                        "phone": "+1 555 0101"})["id"]  # fmt: skip
    post(a, "/api/v1/sales", {"customer_id": cid, "total": 2000, "payment_method": "account"})
    synced(a, b)
    post(b, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 500})
    synced(b, a)
    assert call(a, "DELETE", f"/api/v1/customers/{cid}")[0] == 409  # still owes 1500
    post(a, f"/api/v1/customers/{cid}/ledger", {"type": "credit", "amount": 1500})
    # B edits while A deletes: the deletion wins everywhere.
    assert call(b, "PATCH", f"/api/v1/customers/{cid}", {"notes": "concurrent edit"})[0] == 200
    assert call(a, "DELETE", f"/api/v1/customers/{cid}")[0] == 200
    synced(a, b, c, a)
    for node in (a, b, c):
        assert call(node, "GET", f"/api/v1/customers/{cid}")[0] == 404
        assert get(node, "/api/v1/customers?search=private") == []
        db = Path(node.env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
        with sqlite3.connect(db) as conn:
            dump = "\n".join(conn.iterdump())
        assert "Private Person" not in dump and "pp@example.com" not in dump
        assert "concurrent edit" not in dump
        assert money_view_raw(db, cid) == (0, 20)
    if central.env["SHOPNODE_CENTRAL_DATABASE"].startswith("sqlite"):
        path = central.env["SHOPNODE_CENTRAL_DATABASE"].split("sqlite:///", 1)[1]
        with sqlite3.connect(path) as conn:
            bodies = " ".join(r[0] for r in conn.execute("SELECT body FROM change"))
        assert "Private Person" not in bodies and "pp@example.com" not in bodies
    else:
        import psycopg2

        url = central.env["SHOPNODE_CENTRAL_DATABASE"]
        schema = url.rsplit("%3D", 1)[1]
        with psycopg2.connect("host=127.0.0.1 user=postgres dbname=test") as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT body FROM {schema}.change")
            bodies = " ".join(r[0] for r in cur.fetchall())
        assert "Private Person" not in bodies and "pp@example.com" not in bodies


def money_view_raw(db: Path, customer_id: str) -> tuple:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT ledger_balance, loyalty_points FROM customer WHERE id = ?",
                            (customer_id,)).fetchone()  # fmt: skip


def test_forged_origin_and_bad_tokens_are_refused(shops: Shops, central: Central):
    a = shops.start("shop-a")
    post(a, "/api/v1/customers", {"name": "Real"})
    synced(a)
    origin_a = get(a, "/api/v1/sync/status")["origin"]
    mallory = central.add_store("mallory")
    customer_id = "01900000-0000-7000-8000-0000000000ab"
    change = {"id": "01900000-0000-7000-8000-0000000000aa", "origin": origin_a,
              "origin_seq": 2, "hlc": f"000000000000001-000000-{origin_a}",
              "kind": "customer.created", "entity_id": customer_id,
              "body": json.dumps({"customer": [{
                  "id": customer_id, "name": "Forged", "email": None, "phone": None,
                  "address": None, "notes": None, "tags": "[]", "credit_limit": None,
                  "created_at": "2025-01-01T00:00:00.000Z"}]}),
              "recorded_at": "2025-01-01T00:00:00.000Z"}  # fmt: skip
    status, problem = raw_push(central.url, mallory["token"],
                               {"origin": origin_a, "changes": [change]})  # fmt: skip
    assert status == 403 and "another store" in problem["detail"]
    status, _ = raw_push(central.url, "st_wrong", {"origin": "x", "changes": []})
    assert status == 401
    # A batch whose changes claim another origin than the push's is refused whole.
    mine = "01900000-0000-7000-8000-0000000000ac"
    status, _ = raw_push(central.url, mallory["token"], {"origin": mine, "changes": [change]})
    assert status == 403
    b = shops.start("shop-b")
    synced(b)
    assert [c["name"] for c in get(b, "/api/v1/customers")] == ["Real"]


def test_same_id_different_body_is_quarantined_not_applied(shops: Shops, central: Central):
    store = central.add_store("tester")
    origin = "01900000-0000-7000-8000-0000000000dd"
    change = {"id": "01900000-0000-7000-8000-0000000000bb", "origin": origin,
              "origin_seq": 1, "hlc": f"000000000000001-000000-{origin}",
              "kind": "customer.created", "entity_id": "01900000-0000-7000-8000-0000000000cc",
              "body": json.dumps({"customer": [{
                  "id": "01900000-0000-7000-8000-0000000000cc", "name": "Original",
                  "email": None, "phone": None, "address": None, "notes": None, "tags": "[]",
                  "credit_limit": None, "created_at": "2025-01-01T00:00:00.000Z"}]}),
              "recorded_at": "2025-01-01T00:00:00.000Z"}  # fmt: skip
    status, answer = raw_push(central.url, store["token"], {"origin": origin, "changes": [change]})
    assert (status, answer["acked_seq"], answer["conflicts"]) == (200, 1, [])
    # A retry is acknowledged, not stored twice.
    status, again = raw_push(central.url, store["token"], {"origin": origin, "changes": [change]})
    assert (status, again["acked_seq"], again["conflicts"]) == (200, 1, [])
    forged = {**change, "body": change["body"].replace("Original", "Overwritten")}
    status, answer = raw_push(central.url, store["token"], {"origin": origin,
                                                        "changes": [forged]})  # fmt: skip
    assert status == 200 and answer["conflicts"] == [change["id"]]
    a = shops.start("shop-a")
    synced(a)
    assert [c["name"] for c in get(a, "/api/v1/customers")] == ["Original"]
