"""Databases of the first release (generic change bodies with deltas to totals) upgrade in
place: a shop's balances stay what they were, its change log and central's become facts
byte for byte alike, and a new shop that catches up from the upgraded central ends with the
same books. The rows come from the first release itself (tests/sync/data/*.sql): a sale on
account with points redeemed on it later, a partial refund, a payment and its reversal, an
edit, a deleted customer, and a redemption made at another shop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import peewee
import pytest
from playhouse.db_url import connect

from node import db, settings, verify
from node.migrations import SCHEMA_VERSION, migrate
from sync import worker
from sync.protocol import check_change
from sync.store import MIGRATIONS, SERIAL, CentralStore, SchemaTooNew
from sync.store import SCHEMA_VERSION as CENTRAL_VERSION

DATA = Path(__file__).parent / "data"
FACTS = ("customer", "sale", "refund", "sale_discount", "ledger_entry", "loyalty_event")
TOTALS = "SELECT id, ledger_balance, loyalty_points, total_spent, total_orders FROM customer"


def rows(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text().splitlines()
            if line.startswith("INSERT")]  # fmt: skip


def old_shop(path: Path) -> None:
    database = peewee.SqliteDatabase(str(path))
    database.connect()
    migrate(database, target=4)  # the first release's schema
    with database.atomic():
        for statement in rows("v4_shop.sql"):
            database.execute_sql(statement)
    database.close()


def old_central(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:  # the first release's tables
        conn.execute(statement.format(serial=SERIAL[False]))
    for statement in rows("v1_central.sql"):
        conn.execute(statement)
    conn.commit()
    conn.close()


def query(sql: str) -> list[dict[str, Any]]:
    return db.fetch_all(sql)


def books() -> dict[str, Any]:
    """The facts and totals two shops holding the same changes must agree on."""
    found = {table: query(f"SELECT * FROM {table} ORDER BY id") for table in FACTS[1:]}
    found["customer totals"] = query(TOTALS + " ORDER BY id")
    found["sale counters"] = query(
        "SELECT id, discount_amount, points_earned, points_redeemed, refunded_amount, "
        "points_reversed, points_restored FROM sale ORDER BY id"
    )
    return found


def test_first_release_shop_and_central_upgrade_in_place_and_agree(tmp_path: Path):
    shop, central_db = tmp_path / "shop.db", tmp_path / "central.db"
    old_shop(shop)
    old_central(central_db)
    with sqlite3.connect(shop) as conn:
        totals_before = conn.execute(TOTALS + " ORDER BY id").fetchall()
        counters_before = conn.execute(
            "SELECT id, discount_amount, points_earned, points_redeemed, refunded_amount "
            "FROM sale ORDER BY id").fetchall()  # fmt: skip
    assert any(t[1] or t[2] for t in totals_before), "the fixture holds money"

    db.open_database(shop)
    try:
        assert db.fetch_one("PRAGMA user_version")["user_version"] == SCHEMA_VERSION
        assert verify.differences() == []
        assert [tuple(r.values()) for r in query(TOTALS + " ORDER BY id")] == totals_before
        assert [tuple(r.values()) for r in query(
            "SELECT id, discount_amount, points_earned, points_redeemed, refunded_amount "
            "FROM sale ORDER BY id")] == counters_before  # fmt: skip
        # The late redemption on the sale became its own fact.
        discount = query("SELECT discount_amount, points_redeemed FROM sale_discount")
        assert discount == [{"discount_amount": 50, "points_redeemed": 5}]
        assert db.fetch_one("SELECT COUNT(*) AS n FROM tombstone")["n"] == 1
        shop_log = {r["id"]: r["body"] for r in query("SELECT id, body FROM change_log")}
        shop_books = books()
    finally:
        db.database.close()

    central = CentralStore(f"sqlite:///{central_db}")
    try:
        change = central.change
        held = list(change.select(change.id, change.origin, change.origin_seq, change.hlc,
                                  change.kind, change.entity_id, change.body,
                                  change.recorded_at).order_by(change.gseq))  # fmt: skip
        for change in held:
            check_change(change)  # every upgraded change is a valid fact of its kind
            if change["id"] in shop_log:
                assert shop_log[change["id"]] == change["body"], change["kind"]
        assert set(shop_log) == {c["id"] for c in held}

        # A new shop catches up from the upgraded central: the same books.
        db.open_database(tmp_path / "new.db")
        settings.seed_settings({"earn_rate": 1, "point_value": 10, "currency": "USD",
                                "default_credit_limit": None})  # fmt: skip
        store = central.add_store("new")["store_id"]

        class Direct:
            async def push(self, payload: dict[str, Any]) -> dict[str, Any]:
                return central.push(store, payload["origin"], payload["changes"])

            async def pull(self, after: int, limit: int, origin: str, after_id: str,
                           epoch: str) -> dict[str, Any]:  # fmt: skip
                return central.pull(after, limit, origin, after_id, epoch)

        asyncio.run(worker.sync_round(Direct()))
        assert verify.differences() == []
        assert db.fetch_one("SELECT COUNT(*) AS n FROM sync_pending")["n"] == 0
        assert books() == shop_books
    finally:
        db.database.close()
        central.close()


def test_central_records_its_schema_version_and_refuses_a_newer_one(central_database: str):
    """A central database says which version of the schema it is at; one written by a newer
    shopnode is refused with a plain message, and left as it was."""
    central = CentralStore(central_database)
    try:
        assert central._meta("schema") == str(CENTRAL_VERSION)
        store = central.add_store("kept")["store_id"]
        central._set_meta("schema", str(CENTRAL_VERSION + 1))
    finally:
        central.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {CENTRAL_VERSION + 1}, newer than"):
        CentralStore(central_database)
    reopened = connect(central_database)
    try:
        assert reopened.execute_sql("SELECT id FROM store").fetchall() == [(store,)]
    finally:
        reopened.close()


def test_a_central_on_its_own_postgresql_schema_never_uses_another_ones_tables(postgres_url):
    """search_path = its own (empty) schema, then one that already holds a central: the new
    central creates its tables in its own schema (found by review: it used the other's)."""
    import psycopg2

    from tests.sync.conftest import PG_DSN

    other = CentralStore(postgres_url)  # a central in the fixture's schema
    other.add_store("someone else's")
    other.close()
    own = "t_own_" + uuid.uuid4().hex[:8]
    theirs = postgres_url.rsplit("%3D", 1)[1]
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {own}")
    try:
        url = postgres_url.rsplit("%3D", 1)[0] + f"%3D{own},{theirs}"
        central = CentralStore(url)
        try:
            assert central.status()["stores"] == 0
        finally:
            central.close()
        cursor = conn.cursor()
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                       (own,))  # fmt: skip
        assert {"change", "store", "meta"} <= {name for (name,) in cursor.fetchall()}
    finally:
        conn.cursor().execute(f"DROP SCHEMA {own} CASCADE")
        conn.close()
