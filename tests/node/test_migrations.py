"""A database made by an older release upgrades in place, keeping every row."""

from __future__ import annotations

from pathlib import Path

import peewee

from node.migrations import SCHEMA_VERSION, migrate, schema_version
from tests.conftest import call
from tests.processes import shopnode, start_node


def make_v1_database(path: Path) -> None:
    """What the first release (foundation only) left on disk: customers, no money tables."""
    path.parent.mkdir(parents=True)
    db = peewee.SqliteDatabase(str(path))
    migrate(db, target=1)
    db.execute_sql(
        "INSERT INTO customer(id, name, email, phone, phone_digits, tags, loyalty_points, "
        "total_spent, total_orders, created_at, updated_at) VALUES "
        "('01900000-0000-7000-8000-000000000001', 'Old Friend', 'old@example.com', "
        "'+15550001', '15550001', '[\"vip\"]', 40, 12000, 3, '2025-01-15T10:00:00.000Z', "
        "'2025-01-15T10:00:00.000Z')"
    )
    assert schema_version(db) == 1
    db.close()


def test_v1_database_upgrades_in_place_without_loss(tmp_path):
    data = tmp_path / "data"
    make_v1_database(data / "shop.db")
    env = {"SHOPNODE_NODE_DATA_DIR": str(data), "SHOPNODE_API_PORT": "0"}
    token = shopnode("token", "create", "--name", "owner", env=env).stdout.splitlines()[-1]
    node = start_node(env, tmp_path / "node.log")
    node.token = token
    try:
        status, old = call(node, "GET", "/api/v1/customers/01900000-0000-7000-8000-000000000001")
        assert status == 200
        assert (old["name"], old["email"], old["tags"]) == ("Old Friend", "old@example.com",
                                                           ["vip"])  # fmt: skip
        assert (old["loyalty_points"], old["total_spent"], old["total_orders"]) == (40, 12000, 3)
        assert old["ledger_balance"] == 0 and old["credit_limit"] is None
        status, found = call(node, "GET", "/api/v1/customers?search=friend")
        assert [c["id"] for c in found] == [old["id"]]  # the old search index still works
        status, sale = call(node, "POST", "/api/v1/sales",
                            {"customer_id": old["id"], "total": 1000, "payment_method": "account"})
        assert status == 201
        status, after = call(node, "GET", f"/api/v1/customers/{old['id']}")
        assert after["ledger_balance"] == -1000 and after["loyalty_points"] == 50
    finally:
        assert node.stop() == 0
    db = peewee.SqliteDatabase(str(data / "shop.db"))
    assert schema_version(db) == SCHEMA_VERSION
    db.close()
