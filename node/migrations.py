"""Versioned schema of the shop database.

Each migration is a list of SQL statements (and Python steps for data); `PRAGMA
user_version` records how many have run. A release only ever appends migrations, so an
existing shop database upgrades in place on the next start. Never edit a migration that has shipped.

The schema itself is declared by the models (node/models.py): a new database is created
from them at the current version, and tests/node/test_migrations.py checks that a database
upgraded from every earlier version ends with the same schema. A schema change is a new
migration here plus the same change in the models.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import peewee

V1_FOUNDATION = [
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE api_token (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'staff')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT)""",
    "CREATE UNIQUE INDEX api_token_active_name ON api_token(name) WHERE revoked_at IS NULL",
    """CREATE TABLE customer (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT,
        phone TEXT,
        phone_digits TEXT,
        address TEXT,
        notes TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        loyalty_points INTEGER NOT NULL DEFAULT 0,
        total_spent INTEGER NOT NULL DEFAULT 0,
        total_orders INTEGER NOT NULL DEFAULT 0,
        anonymized_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX customer_name ON customer(name COLLATE NOCASE, id)",
    "CREATE INDEX customer_created ON customer(created_at, id)",
    "CREATE INDEX customer_spent ON customer(total_spent, id)",
    "CREATE INDEX customer_points ON customer(loyalty_points, id)",
    # Counting live customers for X-Total-Count reads this index, not the table.
    "CREATE INDEX customer_anonymized ON customer(anonymized_at)",
    # Trigram index: case-insensitive substring search in ~0.3 ms on 100k customers.
    """CREATE VIRTUAL TABLE customer_fts USING fts5(
        name, email, phone_digits, content='customer', content_rowid='rowid',
        tokenize='trigram')""",
    """CREATE TRIGGER customer_fts_insert AFTER INSERT ON customer BEGIN
        INSERT INTO customer_fts(rowid, name, email, phone_digits)
        VALUES (new.rowid, new.name, new.email, new.phone_digits);
    END""",
    """CREATE TRIGGER customer_fts_delete AFTER DELETE ON customer BEGIN
        INSERT INTO customer_fts(customer_fts, rowid, name, email, phone_digits)
        VALUES ('delete', old.rowid, old.name, old.email, old.phone_digits);
    END""",
    """CREATE TRIGGER customer_fts_update AFTER UPDATE OF name, email, phone_digits
        ON customer BEGIN
        INSERT INTO customer_fts(customer_fts, rowid, name, email, phone_digits)
        VALUES ('delete', old.rowid, old.name, old.email, old.phone_digits);
        INSERT INTO customer_fts(rowid, name, email, phone_digits)
        VALUES (new.rowid, new.name, new.email, new.phone_digits);
    END""",
]

V2_MONEY = [
    "ALTER TABLE customer ADD COLUMN ledger_balance INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customer ADD COLUMN credit_limit INTEGER",
    """CREATE TABLE setting (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    # No CHECKs on running totals: a merge may reveal an overdraft (two shops refunding one
    # sale while offline); history is kept and reported, never rejected.
    """CREATE TABLE sale (
        id TEXT PRIMARY KEY,
        origin TEXT NOT NULL DEFAULT '',
        customer_id TEXT NOT NULL REFERENCES customer(id),
        receipt_number TEXT NOT NULL,
        total INTEGER NOT NULL CHECK (total > 0),
        discount_amount INTEGER NOT NULL DEFAULT 0,
        payment_method TEXT NOT NULL CHECK (payment_method IN ('cash', 'card', 'account')),
        points_earned INTEGER NOT NULL DEFAULT 0,
        points_redeemed INTEGER NOT NULL DEFAULT 0,
        refunded_amount INTEGER NOT NULL DEFAULT 0,
        points_reversed INTEGER NOT NULL DEFAULT 0,
        points_restored INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL)""",
    # Not UNIQUE: a shop restored from an old backup may reissue a receipt number before
    # sync brings the lost sale back; both sales are kept and the clash is reported.
    "CREATE INDEX sale_receipt ON sale(origin, receipt_number)",
    "CREATE INDEX sale_customer ON sale(customer_id, created_at, id)",
    """CREATE TABLE refund (
        id TEXT PRIMARY KEY,
        sale_id TEXT NOT NULL REFERENCES sale(id),
        amount INTEGER NOT NULL CHECK (amount >= 0),
        points_reversed INTEGER NOT NULL DEFAULT 0,
        points_shortfall INTEGER NOT NULL DEFAULT 0,
        points_restored INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX refund_sale ON refund(sale_id)",
    """CREATE TABLE ledger_entry (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customer(id),
        type TEXT NOT NULL CHECK (type IN ('credit', 'debit')),
        amount INTEGER NOT NULL CHECK (amount > 0),
        description TEXT NOT NULL,
        reference_id TEXT,
        reverses_id TEXT REFERENCES ledger_entry(id),
        created_at TEXT NOT NULL)""",
    "CREATE INDEX ledger_customer ON ledger_entry(customer_id, created_at, id)",
    # Not UNIQUE: two shops may reverse one entry while offline; the merge keeps both.
    "CREATE INDEX ledger_reverses ON ledger_entry(reverses_id)",
    """CREATE TABLE loyalty_event (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customer(id),
        kind TEXT NOT NULL CHECK (kind IN ('earn', 'redeem', 'refund', 'adjust')),
        points INTEGER NOT NULL,
        sale_id TEXT REFERENCES sale(id),
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL)""",
    "CREATE INDEX loyalty_customer ON loyalty_event(customer_id, created_at, id)",
    "CREATE INDEX loyalty_created ON loyalty_event(created_at)",
    # Keys are per client (token name), like Stripe's per account: two tills never collide.
    """CREATE TABLE idempotency_key (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (scope, key))""",
    "CREATE INDEX idempotency_created ON idempotency_key(created_at)",
]

V3_SYNC = [
    # Every synced write, in the same transaction as the write (node/changes.py).
    """CREATE TABLE change_log (
        id TEXT PRIMARY KEY,
        origin TEXT NOT NULL,
        origin_seq INTEGER NOT NULL,
        hlc TEXT NOT NULL,
        kind TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        body TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (origin, origin_seq))""",
    # Last-writer-wins clock of each customer profile field that has been edited.
    """CREATE TABLE customer_field_clock (
        customer_id TEXT NOT NULL,
        field TEXT NOT NULL,
        hlc TEXT NOT NULL,
        PRIMARY KEY (customer_id, field))""",
    # What sync noticed and a person should know: overdrafts after a merge, clocks far in
    # the future, conflicting bodies.
    """CREATE TABLE sync_report (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        change_id TEXT,
        detail TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
]

V4_IMPORT = [
    # One row per imported CSV row, so re-running an import imports nothing twice.
    """CREATE TABLE import_mark (
        fingerprint TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        imported_at TEXT NOT NULL)""",
]


def upgrade_body(kind: str, text: str, change_id: str, recorded_at: str) -> str:
    """A change body of the first release (generic rows plus deltas to totals) as the
    facts it carried (node/changes.py). Deterministic, so central and every node turn one
    old change into the same bytes. Deltas are dropped (totals are derived now), except a
    late points discount on a sale, which becomes its `sale_discount` fact."""
    old = json.loads(text)
    if not ({"rows", "adds", "scrub"} & set(old) or isinstance(old.get("fields"), list)):
        return text  # already facts
    body: dict = {}
    for table, row in old.get("rows", []):
        if table == "customer":
            row = {k: v for k, v in row.items() if k not in ("phone_digits", "updated_at")}
        body.setdefault(table, []).append(row)
    for table, row_id, deltas in old.get("adds", []):
        if table == "sale" and "discount_amount" in deltas:
            body.setdefault("sale_discount", []).append({
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"shopnode:discount:{change_id}")),
                "sale_id": row_id, "discount_amount": deltas["discount_amount"],
                "points_redeemed": deltas.get("points_redeemed", 0),
                "points_not_earned": -deltas.get("points_earned", 0), "created_at": recorded_at,
            })  # fmt: skip
    if "fields" in old:
        body["customer_id"], body["fields"] = old["fields"]
    if "scrub" in old:
        body["customer_id"] = old["scrub"]
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _v5_facts(db: peewee.Database) -> None:
    """Change bodies become facts; late discounts get their own rows; tombstones are kept."""
    rows = db.execute_sql("SELECT id, kind, body, recorded_at FROM change_log").fetchall()
    for change_id, kind, text, recorded_at in rows:
        new = upgrade_body(kind, text, change_id, recorded_at)
        if new != text:
            db.execute_sql("UPDATE change_log SET body = ? WHERE id = ?", (new, change_id))
        for row in json.loads(new).get("sale_discount", []):
            db.execute_sql(
                "INSERT OR IGNORE INTO sale_discount(id, sale_id, discount_amount, "
                "points_redeemed, points_not_earned, created_at) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sale WHERE id = ?)",
                (row["id"], row["sale_id"], row["discount_amount"], row["points_redeemed"],
                 row["points_not_earned"], row["created_at"], row["sale_id"]),
            )  # fmt: skip
    # The till's values: what the live columns held before any late discount.
    db.execute_sql(
        "UPDATE sale SET till_discount_amount = discount_amount - (SELECT COALESCE("
        "SUM(discount_amount), 0) FROM sale_discount WHERE sale_id = sale.id), "
        "till_points_redeemed = points_redeemed - (SELECT COALESCE(SUM(points_redeemed), 0) "
        "FROM sale_discount WHERE sale_id = sale.id), "
        "till_points_earned = points_earned + (SELECT COALESCE(SUM(points_not_earned), 0) "
        "FROM sale_discount WHERE sale_id = sale.id)"
    )
    # Totals from before facts were kept (a first-version database had no points events):
    # carried as opening amounts, so deriving from facts changes no balance.
    from node.derive import CUSTOMER_TOTALS

    db.execute_sql("UPDATE customer SET " + ", ".join(
        f"opening_{column} = {column} - ({expr.replace('c.', 'customer.')})"
        for column, expr in CUSTOMER_TOTALS.items()))  # fmt: skip
    db.execute_sql(
        "INSERT OR IGNORE INTO tombstone(customer_id, kind, created_at, change_id, recorded_at) "
        "SELECT entity_id, substr(kind, 10), NULL, id, recorded_at FROM change_log "
        "WHERE kind IN ('customer.deleted', 'customer.anonymized') ORDER BY recorded_at"
    )


V5_FACTS: list[str | Callable[[peewee.Database], None]] = [
    # A sale keeps what the till recorded; its live columns add late discounts (derive.py).
    "ALTER TABLE sale ADD COLUMN till_discount_amount INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sale ADD COLUMN till_points_earned INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE sale ADD COLUMN till_points_redeemed INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customer ADD COLUMN opening_ledger_balance INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customer ADD COLUMN opening_loyalty_points INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customer ADD COLUMN opening_total_spent INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customer ADD COLUMN opening_total_orders INTEGER NOT NULL DEFAULT 0",
    # Points redeemed on a sale after it was recorded: a fact of its own.
    """CREATE TABLE sale_discount (
        id TEXT PRIMARY KEY,
        sale_id TEXT NOT NULL REFERENCES sale(id),
        discount_amount INTEGER NOT NULL CHECK (discount_amount >= 0),
        points_redeemed INTEGER NOT NULL CHECK (points_redeemed >= 0),
        points_not_earned INTEGER NOT NULL CHECK (points_not_earned >= 0),
        created_at TEXT NOT NULL)""",
    "CREATE INDEX sale_discount_sale ON sale_discount(sale_id)",
    # A customer deleted or anonymized anywhere, for good: every later or late change for
    # them is checked against it (no personal data ever comes back).
    """CREATE TABLE tombstone (
        customer_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        created_at TEXT,
        change_id TEXT NOT NULL,
        recorded_at TEXT NOT NULL)""",
    # Remote changes whose prerequisite (a customer, a sale, an entry, our clock reaching
    # their stamp) has not arrived: applied when it does, never skipped.
    """CREATE TABLE sync_pending (
        change_id TEXT PRIMARY KEY,
        entity_id TEXT NOT NULL,
        waits_for TEXT NOT NULL,
        change TEXT NOT NULL,
        received_at TEXT NOT NULL)""",
    "CREATE INDEX sync_pending_waits ON sync_pending(waits_for)",
    "CREATE INDEX sync_pending_entity ON sync_pending(entity_id)",
    # Deriving a customer's totals reads only these indexes, not the rows (catch-up ran
    # ~2.5x faster with them in bench/sync.py).
    "CREATE INDEX ledger_customer_amount ON ledger_entry(customer_id, type, amount)",
    "CREATE INDEX loyalty_customer_points ON loyalty_event(customer_id, points)",
    """CREATE INDEX sale_customer_totals
        ON sale(customer_id, total, discount_amount, refunded_amount)""",
    _v5_facts,
]

V6_TELEGRAM = [
    # The `integration` role (reads the events feed): SQLite cannot change a CHECK, so the
    # token table is rebuilt with its rows.
    "ALTER TABLE api_token RENAME TO api_token_v5",
    "DROP INDEX api_token_active_name",
    """CREATE TABLE api_token (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'staff', 'integration')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT)""",
    "INSERT INTO api_token SELECT * FROM api_token_v5",
    "DROP TABLE api_token_v5",
    "CREATE UNIQUE INDEX api_token_active_name ON api_token(name) WHERE revoked_at IS NULL",
    # Customers on Telegram: this node's own, never synced (node/telegram.py).
    """CREATE TABLE telegram_invite (
        code_hash TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT)""",
    "CREATE INDEX telegram_invite_customer ON telegram_invite(customer_id)",
    """CREATE TABLE telegram_link (
        customer_id TEXT PRIMARY KEY,
        telegram_user_id INTEGER NOT NULL UNIQUE,
        receipts INTEGER NOT NULL DEFAULT 1,
        linked_at TEXT NOT NULL,
        linked_cursor INTEGER NOT NULL)""",
    """CREATE TABLE telegram_message (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('receipt', 'reminder')),
        customer_id TEXT NOT NULL,
        change_id TEXT UNIQUE,
        sent_at TEXT NOT NULL)""",
    """CREATE INDEX telegram_message_customer
        ON telegram_message(customer_id, kind, sent_at)""",
    "CREATE INDEX telegram_message_sent ON telegram_message(sent_at)",
]

MIGRATIONS: list[list] = [V1_FOUNDATION, V2_MONEY, V3_SYNC, V4_IMPORT, V5_FACTS, V6_TELEGRAM]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer shopnode than this one."""


def schema_version(db: peewee.Database) -> int:
    return db.execute_sql("PRAGMA user_version").fetchone()[0]


def migrate(
    db: peewee.Database,
    target: int = SCHEMA_VERSION,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run the migrations the database has not seen yet, each in its own transaction; an
    empty database is created from the models (up to `target`: the migrations)."""
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this shopnode "
            f"({SCHEMA_VERSION}); upgrade shopnode"
        )
    if current == 0 and target == SCHEMA_VERSION:
        # node.models binds to node.db, which imports this module: imported when needed.
        from node.models import create_schema

        with db.atomic():
            create_schema(db)
            db.execute_sql(f"PRAGMA user_version = {target}")
        if progress:
            progress(target)
        return schema_version(db)
    for version in range(current + 1, target + 1):
        with db.atomic():
            for statement in MIGRATIONS[version - 1]:
                if callable(statement):
                    statement(db)
                else:
                    db.execute_sql(statement)
            db.execute_sql(f"PRAGMA user_version = {version}")
        if progress:
            progress(version)
    return schema_version(db)
