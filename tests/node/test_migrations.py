"""A database made by an older release upgrades in place, keeping every row."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import peewee
import pytest

from node import customers, db, models, sales, verify
from node.migrations import SCHEMA_VERSION, migrate, schema_version
from sync.protocol import check_body
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


# -- the models are the schema: a new database and an upgraded one hold the same ------------


def _normal(sql: str) -> str:
    """DDL text up to quoting, spacing and case (peewee quotes names, migrations do not)."""
    sql = re.sub(r"\s+", " ", sql.replace('"', "").lower())
    sql = re.sub(r"\s*([(),;=])\s*", r"\1", sql).replace("if not exists ", "")
    return sql.strip()


def _checks(sql: str) -> list[str]:
    """The CHECK constraints of a CREATE TABLE (balanced parentheses), normalized."""
    found = []
    for match in re.finditer(r"\bCHECK\s*\(", sql, re.IGNORECASE):
        depth, start = 1, match.end()
        end = start
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(_normal(sql[start : end - 1]))
    return sorted(found)


def schema_of(path: Path) -> dict[str, Any]:
    """Everything the schema says, per object: columns (type, NOT NULL, default, key),
    CHECKs, foreign keys, indexes (columns, collation, order, unique, partial and its
    condition), the search table's definition and the triggers."""
    conn = sqlite3.connect(path)

    def pragma(name: str, argument: str) -> list[tuple]:
        return conn.execute(f"PRAGMA {name}('{argument}')").fetchall()

    try:
        found: dict[str, Any] = {}
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        for kind, name, table, sql in objects:
            entry: dict[str, Any] = {"type": kind, "table": table}
            if kind == "table":
                entry["columns"] = pragma("table_xinfo", name)
                entry["foreign keys"] = sorted(pragma("foreign_key_list", name))
                entry["indexes"] = sorted(row[1:] for row in pragma("index_list", name))
                entry["checks"] = _checks(sql or "")
                if sql and sql.upper().startswith("CREATE VIRTUAL"):
                    entry["definition"] = _normal(sql).replace("'", "")
            elif kind == "index":
                entry["columns"] = pragma("index_xinfo", name)
                where = re.search(r"\bWHERE\b(.*)$", sql or "", re.IGNORECASE | re.DOTALL)
                entry["where"] = _normal(where.group(1)).strip("()") if where else None
            else:
                entry["definition"] = _normal(sql)
            found[name] = entry
        found["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        return found
    finally:
        conn.close()


def database_at(path: Path, version: int) -> peewee.SqliteDatabase:
    """A database as the release at `version` made it, by running its migrations."""
    db = peewee.SqliteDatabase(str(path))
    migrate(db, target=version)
    assert schema_version(db) == version
    return db


def test_a_new_database_is_made_from_the_models(tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "new.db"))
    migrate(db)
    db.close()
    made = schema_of(tmp_path / "new.db")
    assert made["user_version"] == SCHEMA_VERSION
    # Created by peewee from the models, not by the migrations' statements.
    with sqlite3.connect(tmp_path / "new.db") as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sale'").fetchone()[0]
    assert sql.startswith('CREATE TABLE "sale" ("id" TEXT PRIMARY KEY')
    assert {model._meta.table_name for model in models.MODELS} <= set(made)


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_earlier_version_migrates_to_the_models_schema(tmp_path, version):
    """V1 -> current, V2 -> current, ...: the upgraded schema is the one the models
    declare, down to defaults, CHECKs, collations, partial indexes and triggers."""
    database_at(tmp_path / "old.db", version).close()
    db = peewee.SqliteDatabase(str(tmp_path / "old.db"))
    migrate(db)
    db.close()
    new = peewee.SqliteDatabase(str(tmp_path / "new.db"))
    migrate(new)
    new.close()
    upgraded, made = schema_of(tmp_path / "old.db"), schema_of(tmp_path / "new.db")
    assert set(upgraded) == set(made)
    for name in made:
        assert upgraded[name] == made[name], name


def test_the_schema_comparison_sees_a_difference(tmp_path):
    """The comparison above is not blind: a default, a CHECK or a partial index's condition
    that differs is a difference."""
    base = peewee.SqliteDatabase(str(tmp_path / "a.db"))
    migrate(base)
    base.close()
    for name, change in [
        ("default", "ALTER TABLE customer ADD COLUMN extra INTEGER NOT NULL DEFAULT 1"),
        ("check", "CREATE TABLE t (x INTEGER CHECK (x > 0))"),
        ("where", "DROP INDEX api_token_active_name; CREATE UNIQUE INDEX api_token_active_name "
                  "ON api_token(name) WHERE revoked_at IS NOT NULL"),
    ]:  # fmt: skip
        copy = tmp_path / f"{name}.db"
        copy.write_bytes((tmp_path / "a.db").read_bytes())
        with sqlite3.connect(copy) as conn:
            conn.executescript(change)
        assert schema_of(copy) != schema_of(tmp_path / "a.db"), name


FIRST_RELEASE_ROWS = Path(__file__).parents[1] / "sync" / "data" / "v4_shop.sql"
FIRST_RELEASE = 4  # the schema version of those rows


def _rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple]:
    names = ", ".join(columns)
    return conn.execute(f"SELECT {names} FROM {table} ORDER BY rowid").fetchall()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_earlier_version_upgrades_in_place_keeping_its_rows(tmp_path, version):
    """A database of each earlier version, holding what that version could hold (from v2
    on: the first release's rows of tests/sync/data, money and sync included), upgrades in
    place: every row kept, the books exact, search and a new sale working on it."""
    path = tmp_path / "data" / "shop.db"
    if version == 1:
        make_v1_database(path)
    else:
        path.parent.mkdir()
        # The first release's rows fit its own schema (v4); later versions hold them upgraded.
        old = database_at(path, min(version, FIRST_RELEASE))
        tables = {r[0] for r in old.execute_sql("SELECT name FROM sqlite_master")}
        for statement in FIRST_RELEASE_ROWS.read_text().splitlines():
            table = re.match(r'INSERT INTO "(\w+)"', statement)
            if table and table.group(1) in tables:
                old.execute_sql(statement)
        migrate(old, target=version)
        old.close()
    before: dict[str, tuple[list[str], list[tuple]]] = {}
    with sqlite3.connect(path) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'customer_fts%'"):  # fmt: skip
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info('{table}')")]
            before[table] = columns, _rows(conn, table, columns)
    conn.close()
    assert before["customer"][1], "the old database holds customers"

    opened = db.open_database(path)
    try:
        assert schema_version(opened) == SCHEMA_VERSION
        with sqlite3.connect(path) as conn:
            for table, (columns, rows) in before.items():
                if table == "change_log":  # bodies become facts (test_upgrade.py)
                    keep = [i for i, column in enumerate(columns) if column != "body"]
                    rows = [tuple(row[i] for i in keep) for row in rows]
                    columns = [columns[i] for i in keep]
                after = _rows(conn, table, columns)
                assert [row for row in rows if row not in after] == [], table
                if table != "meta":  # the node's identity is added on first start
                    assert len(after) == len(rows), table
        conn.close()
        for row in db.fetch_all("SELECT kind, entity_id, body FROM change_log"):
            check_body(row["kind"], row["entity_id"], json.loads(row["body"]))
        assert verify.differences() == []

        live = db.fetch_one("SELECT id, name, ledger_balance, loyalty_points, total_spent, "
                            "total_orders FROM customer WHERE anonymized_at IS NULL "
                            "ORDER BY rowid LIMIT 1")  # fmt: skip
        found = customers.list_customers(search=live["name"][:4].lower()).rows
        assert live["id"] in [c["id"] for c in found]  # the old search index works
        sales.record_sale(live["id"], 1000, "account")
        after = customers.get_customer(live["id"])
        assert (after["ledger_balance"], after["loyalty_points"], after["total_spent"],
                after["total_orders"]) == (live["ledger_balance"] - 1000,
                                           live["loyalty_points"] + 10,
                                           live["total_spent"] + 1000,
                                           live["total_orders"] + 1)  # fmt: skip
        assert verify.differences() == []
    finally:
        db.database.close()


def test_the_column_marks_give_what_shops_already_hold():
    """Stored change bodies and import fingerprints depend on these (sync/protocol.py
    checks the fact columns against its own field checks)."""
    assert models.PROFILE_COLUMNS == ("name", "email", "phone", "address", "notes", "tags",
                                      "credit_limit")  # fmt: skip
    assert models.SCRUBBED == {"name": "Deleted customer", "email": None, "phone": None,
                               "address": None, "notes": None, "tags": "[]"}  # fmt: skip
    assert models.SCRUBBED_ROW == {**models.SCRUBBED, "phone_digits": None}
