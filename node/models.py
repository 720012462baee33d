"""The shop database's schema, declared once: one peewee model per table.

A new database is created from these models (node/migrations.py); an older one is upgraded
by the migrations, and tests/node/test_migrations.py checks that both end with the same
tables, columns, defaults, CHECKs, keys, indexes, search table and triggers. A change to the
schema is a new migration plus the same change here. Columns are declared in the order they
are stored (a column a migration added comes last, where ALTER TABLE put it).

Columns say what sync does with them (`column()`): a `fact` is carried in change bodies
(every node stores it as it was made), a `profile` field is also edited by
`customer.updated` and merged last-writer-wins, a `personal` one is blanked (to its
`scrubbed` value) when the customer is deleted or anonymized. The sync allowlists, the
personal fields and the CSV import columns are read from these marks (end of this file).
"""

from __future__ import annotations

from typing import Any, TypeVar

import peewee
from peewee import (
    SQL,
    AutoField,
    Check,
    CompositeKey,
    Field,
    ForeignKeyField,
    IntegerField,
    TextField,
)
from playhouse.sqlite_ext import FTS5Model, SearchField

from node.db import database

ANONYMIZED_NAME = "Deleted customer"
PAYMENT_METHODS = ("cash", "card", "account")
ENTRY_TYPES = ("credit", "debit")
POINTS_KINDS = ("earn", "redeem", "refund", "adjust")
ROLES = ("owner", "staff", "integration")  # integration: reads the events feed only

F = TypeVar("F", bound=Field)


def column(
    field: F,
    *,
    fact: bool = False,
    profile: bool = False,
    personal: bool = False,
    scrubbed: Any = None,
) -> F:
    """Mark what sync does with a column (see the module docstring); a profile field is a
    fact too."""
    field.fact = fact or profile  # type: ignore[attr-defined]
    field.profile = profile  # type: ignore[attr-defined]
    field.personal = personal  # type: ignore[attr-defined]
    field.scrubbed = scrubbed  # type: ignore[attr-defined]
    return field


def text_key() -> TextField:
    # As the migrations declared keys: TEXT PRIMARY KEY, which SQLite does not make NOT NULL.
    return TextField(primary_key=True, null=True)


def default(value: int | str) -> SQL:
    """A DEFAULT of the table: every INSERT that leaves the column out gets it."""
    return SQL(f"DEFAULT '{value}'" if isinstance(value, str) else f"DEFAULT {value}")


def one_of(name: str, values: tuple[str, ...]) -> SQL:
    return Check(f"{name} IN ({', '.join(repr(v) for v in values)})")


def refers_to(model: Any, name: str, null: bool = False) -> ForeignKeyField:
    # No index of its own: each table indexes it together with what its queries need.
    return ForeignKeyField(model, column_name=name, null=null, index=False, backref="+")


def index(model: type[peewee.Model], name: str, *fields: Any, **options: Any) -> None:
    model.add_index(model.index(*fields, name=name, **options))


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False  # ApiToken -> api_token


class NodeMeta(BaseModel):
    """This node's own values: its origin id, sync progress, its clock."""

    key = text_key()
    value = TextField()

    class Meta:
        table_name = "meta"


class ApiToken(BaseModel):
    id = text_key()
    name = TextField()
    role = TextField(constraints=[one_of("role", ROLES)])
    token_hash = TextField(constraints=[SQL("UNIQUE")])
    created_at = TextField()
    revoked_at = TextField(null=True)


index(ApiToken, "api_token_active_name", ApiToken.name, unique=True,
      where=ApiToken.revoked_at.is_null())  # fmt: skip


class Customer(BaseModel):
    id = column(text_key(), fact=True)
    name = column(TextField(), profile=True, personal=True, scrubbed=ANONYMIZED_NAME)
    email = column(TextField(null=True), profile=True, personal=True)
    phone = column(TextField(null=True), profile=True, personal=True)
    phone_digits = column(TextField(null=True), personal=True)  # the phone's, for search
    address = column(TextField(null=True), profile=True, personal=True)
    notes = column(TextField(null=True), profile=True, personal=True)
    tags = column(TextField(constraints=[default("[]")]), profile=True, personal=True,
                  scrubbed="[]")  # fmt: skip
    loyalty_points = IntegerField(constraints=[default(0)])  # derived (node/derive.py)
    total_spent = IntegerField(constraints=[default(0)])  # derived
    total_orders = IntegerField(constraints=[default(0)])  # derived
    anonymized_at = TextField(null=True)
    created_at = column(TextField(), fact=True)
    updated_at = TextField()
    ledger_balance = IntegerField(constraints=[default(0)])  # derived
    credit_limit = column(IntegerField(null=True), profile=True)
    # Totals a first-version database held without facts (node/derive.py).
    opening_ledger_balance = IntegerField(constraints=[default(0)])
    opening_loyalty_points = IntegerField(constraints=[default(0)])
    opening_total_spent = IntegerField(constraints=[default(0)])
    opening_total_orders = IntegerField(constraints=[default(0)])


index(Customer, "customer_name", Customer.name.collate("NOCASE"), Customer.id)
index(Customer, "customer_created", Customer.created_at, Customer.id)
index(Customer, "customer_spent", Customer.total_spent, Customer.id)
index(Customer, "customer_points", Customer.loyalty_points, Customer.id)
# Counting live customers for X-Total-Count reads this index, not the table.
index(Customer, "customer_anonymized", Customer.anonymized_at)


class CustomerSearch(FTS5Model):
    """Trigram index of the customer table: case-insensitive substring search in ~0.3 ms on
    100k customers (bench/search.py). It holds no copy of the text (content='customer');
    the triggers of SEARCH_TRIGGERS keep it in step with the table."""

    name = SearchField()
    email = SearchField()
    phone_digits = SearchField()

    class Meta:
        database = database
        table_name = "customer_fts"
        options = {"content": Customer, "content_rowid": "rowid", "tokenize": "trigram"}


def _search_triggers() -> list[str]:
    # peewee has no triggers: these are the only raw DDL of the schema.
    columns = [f.column_name for f in CustomerSearch._meta.sorted_fields if f.name != "rowid"]
    names = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    add = f"INSERT INTO customer_fts(rowid, {names}) VALUES (new.rowid, {new});"
    remove = (f"INSERT INTO customer_fts(customer_fts, rowid, {names}) "
              f"VALUES ('delete', old.rowid, {old});")  # fmt: skip
    return [
        f"CREATE TRIGGER customer_fts_insert AFTER INSERT ON customer BEGIN {add} END",
        f"CREATE TRIGGER customer_fts_delete AFTER DELETE ON customer BEGIN {remove} END",
        f"CREATE TRIGGER customer_fts_update AFTER UPDATE OF {names} ON customer BEGIN "
        f"{remove} {add} END",
    ]


SEARCH_TRIGGERS = _search_triggers()


class Setting(BaseModel):
    key = text_key()
    value = TextField()


# No CHECKs on running totals: a merge may reveal an overdraft (two shops refunding one
# sale while offline); history is kept and reported, never rejected.
class Sale(BaseModel):
    id = column(text_key(), fact=True)
    origin = column(TextField(constraints=[default("")]), fact=True)
    customer = column(refers_to(Customer, "customer_id"), fact=True)
    receipt_number = column(TextField(), fact=True)
    total = column(IntegerField(constraints=[Check("total > 0")]), fact=True)
    discount_amount = column(IntegerField(constraints=[default(0)]), fact=True)
    payment_method = column(TextField(constraints=[one_of("payment_method", PAYMENT_METHODS)]),
                            fact=True)  # fmt: skip
    points_earned = column(IntegerField(constraints=[default(0)]), fact=True)
    points_redeemed = column(IntegerField(constraints=[default(0)]), fact=True)
    refunded_amount = IntegerField(constraints=[default(0)])  # derived
    points_reversed = IntegerField(constraints=[default(0)])  # derived
    points_restored = IntegerField(constraints=[default(0)])  # derived
    created_at = column(TextField(), fact=True)
    # What the till recorded; the live columns add late discounts (node/derive.py).
    till_discount_amount = IntegerField(constraints=[default(0)])
    till_points_earned = IntegerField(constraints=[default(0)])
    till_points_redeemed = IntegerField(constraints=[default(0)])


# Not UNIQUE: a shop restored from an old backup may reissue a receipt number before sync
# brings the lost sale back; both sales are kept and the clash is reported.
index(Sale, "sale_receipt", Sale.origin, Sale.receipt_number)
index(Sale, "sale_customer", Sale.customer, Sale.created_at, Sale.id)


class Refund(BaseModel):
    id = column(text_key(), fact=True)
    sale = column(refers_to(Sale, "sale_id"), fact=True)
    amount = column(IntegerField(constraints=[Check("amount >= 0")]), fact=True)
    points_reversed = column(IntegerField(constraints=[default(0)]), fact=True)
    points_shortfall = column(IntegerField(constraints=[default(0)]), fact=True)
    points_restored = column(IntegerField(constraints=[default(0)]), fact=True)
    created_at = column(TextField(), fact=True)


index(Refund, "refund_sale", Refund.sale)


class LedgerEntry(BaseModel):
    id = column(text_key(), fact=True)
    customer = column(refers_to(Customer, "customer_id"), fact=True)
    type = column(TextField(constraints=[one_of("type", ENTRY_TYPES)]), fact=True)
    amount = column(IntegerField(constraints=[Check("amount > 0")]), fact=True)
    description = column(TextField(), fact=True)
    reference_id = column(TextField(null=True), fact=True)
    reverses = column(refers_to("self", "reverses_id", null=True), fact=True)
    created_at = column(TextField(), fact=True)


index(LedgerEntry, "ledger_customer", LedgerEntry.customer, LedgerEntry.created_at,
      LedgerEntry.id)  # fmt: skip
# Not UNIQUE: two shops may reverse one entry while offline; the merge keeps both.
index(LedgerEntry, "ledger_reverses", LedgerEntry.reverses)


class LoyaltyEvent(BaseModel):
    id = column(text_key(), fact=True)
    customer = column(refers_to(Customer, "customer_id"), fact=True)
    kind = column(TextField(constraints=[one_of("kind", POINTS_KINDS)]), fact=True)
    points = column(IntegerField(), fact=True)
    sale = column(refers_to(Sale, "sale_id", null=True), fact=True)
    description = column(TextField(constraints=[default("")]), fact=True)
    created_at = column(TextField(), fact=True)


index(LoyaltyEvent, "loyalty_customer", LoyaltyEvent.customer, LoyaltyEvent.created_at,
      LoyaltyEvent.id)  # fmt: skip
index(LoyaltyEvent, "loyalty_created", LoyaltyEvent.created_at)


class IdempotencyKey(BaseModel):
    """Keys are per client (token name), like Stripe's per account: two tills never
    collide."""

    scope = TextField()
    key = TextField()
    request_hash = TextField()
    status = IntegerField()
    body = TextField()
    created_at = TextField()

    class Meta:
        primary_key = CompositeKey("scope", "key")


index(IdempotencyKey, "idempotency_created", IdempotencyKey.created_at)


class ChangeLog(BaseModel):
    """Every synced write, in the same transaction as the write (node/changes.py)."""

    id = text_key()
    origin = TextField()
    origin_seq = IntegerField()
    hlc = TextField()
    kind = TextField()
    entity_id = TextField()
    body = TextField()
    recorded_at = TextField()

    class Meta:
        constraints = [SQL("UNIQUE (origin, origin_seq)")]


class CustomerFieldClock(BaseModel):
    """Last-writer-wins clock of each customer profile field that has been edited."""

    customer_id = TextField()
    field = TextField()
    hlc = TextField()

    class Meta:
        primary_key = CompositeKey("customer_id", "field")


class SyncReport(BaseModel):
    """What sync noticed and a person should know: overdrafts after a merge, clocks far in
    the future, conflicting bodies."""

    id = AutoField(null=True)  # INTEGER PRIMARY KEY, as migration 3 declared it
    kind = TextField()
    change_id = TextField(null=True)
    detail = TextField()
    created_at = TextField()


class ImportMark(BaseModel):
    """One row per imported CSV row, so re-running an import imports nothing twice."""

    fingerprint = text_key()
    customer_id = TextField()
    imported_at = TextField()


class SaleDiscount(BaseModel):
    """Points redeemed on a sale after it was recorded: a fact of its own."""

    id = column(text_key(), fact=True)
    sale = column(refers_to(Sale, "sale_id"), fact=True)
    discount_amount = column(IntegerField(constraints=[Check("discount_amount >= 0")]),
                             fact=True)  # fmt: skip
    points_redeemed = column(IntegerField(constraints=[Check("points_redeemed >= 0")]),
                             fact=True)  # fmt: skip
    points_not_earned = column(IntegerField(constraints=[Check("points_not_earned >= 0")]),
                               fact=True)  # fmt: skip
    created_at = column(TextField(), fact=True)


index(SaleDiscount, "sale_discount_sale", SaleDiscount.sale)


class Tombstone(BaseModel):
    """A customer deleted or anonymized anywhere, for good: every later or late change for
    them is checked against it (no personal data ever comes back)."""

    customer_id = text_key()
    kind = TextField()
    created_at = TextField(null=True)
    change_id = TextField()
    recorded_at = TextField()


class SyncPending(BaseModel):
    """Remote changes whose prerequisite (a customer, a sale, an entry, our clock reaching
    their stamp) has not arrived: applied when it does, never skipped."""

    change_id = text_key()
    entity_id = TextField()
    waits_for = TextField()
    change = TextField()
    received_at = TextField()


index(SyncPending, "sync_pending_waits", SyncPending.waits_for)
index(SyncPending, "sync_pending_entity", SyncPending.entity_id)

# Deriving a customer's totals reads only these indexes, not the rows (catch-up ran ~2.5x
# faster with them in bench/sync.py).
index(LedgerEntry, "ledger_customer_amount", LedgerEntry.customer, LedgerEntry.type,
      LedgerEntry.amount)  # fmt: skip
index(LoyaltyEvent, "loyalty_customer_points", LoyaltyEvent.customer, LoyaltyEvent.points)
index(Sale, "sale_customer_totals", Sale.customer, Sale.total, Sale.discount_amount,
      Sale.refunded_amount)  # fmt: skip



# -- customers on Telegram (node/telegram.py): this node's own, never synced ----------------
TELEGRAM_MESSAGE_KINDS = ("receipt", "reminder")


class TelegramInvite(BaseModel):
    """A one-time code that links a customer's Telegram account; only its hash is kept."""

    code_hash = text_key()
    customer_id = TextField()
    created_at = TextField()
    expires_at = TextField()
    used_at = TextField(null=True)


index(TelegramInvite, "telegram_invite_customer", TelegramInvite.customer_id)


class TelegramLink(BaseModel):
    """A customer's Telegram account, linked with their consent: one each way."""

    customer_id = text_key()
    telegram_user_id = IntegerField(constraints=[SQL("UNIQUE")])
    receipts = IntegerField(constraints=[default(1)])
    linked_at = TextField()
    # The events feed's cursor when linked: no receipt for a fact logged before it.
    linked_cursor = IntegerField()


class TelegramMessage(BaseModel):
    """A receipt or reminder the bot sends (claimed before sending): a receipt once per
    change, a reminder once per customer per `[bot] remind_every_days`."""

    id = text_key()
    kind = TextField(constraints=[one_of("kind", TELEGRAM_MESSAGE_KINDS)])
    customer_id = TextField()
    change_id = TextField(null=True, constraints=[SQL("UNIQUE")])
    sent_at = TextField()


index(TelegramMessage, "telegram_message_customer", TelegramMessage.customer_id,
      TelegramMessage.kind, TelegramMessage.sent_at)  # fmt: skip
index(TelegramMessage, "telegram_message_sent", TelegramMessage.sent_at)

# What ties a customer to a Telegram account: erased when the customer is deleted or
# anonymized (node/customers.py scrub_customer).
TELEGRAM_MODELS = (TelegramInvite, TelegramLink, TelegramMessage)

MODELS: list[type[peewee.Model]] = [
    NodeMeta, ApiToken, Customer, CustomerSearch, Setting, Sale, Refund, LedgerEntry,
    LoyaltyEvent, IdempotencyKey, ChangeLog, CustomerFieldClock, SyncReport, ImportMark,
    SaleDiscount, Tombstone, SyncPending, *TELEGRAM_MODELS,
]  # fmt: skip


def create_schema(db: peewee.Database) -> None:
    """Create every table, index and trigger in an empty database (caller's transaction)."""
    for model in MODELS:
        # A schema manager for `db`, whatever the models are bound to now.
        type(model._schema)(model, db).create_all(safe=False)
    for trigger in SEARCH_TRIGGERS:
        db.execute_sql(trigger)


# -- what sync, anonymization and import read from the marks ----------------------------------
FACT_MODELS = (Customer, Sale, Refund, SaleDiscount, LedgerEntry, LoyaltyEvent)


def _columns(model: type[peewee.Model], mark: str) -> tuple[str, ...]:
    return tuple(f.column_name for f in model._meta.sorted_fields if getattr(f, mark, False))


# The columns of each fact a change carries; the stored rows may hold more (derived).
FACT_COLUMNS = {model._meta.table_name: _columns(model, "fact") for model in FACT_MODELS}
# What customer.updated may set, and what a CSV import row holds.
PROFILE_COLUMNS = _columns(Customer, "profile")
# The personal columns of the customer row, and what anonymization leaves in them.
SCRUBBED_ROW = {
    f.column_name: f.scrubbed for f in Customer._meta.sorted_fields if getattr(f, "personal", False)
}
# The personal fields a change body may carry, blanked the same way (node/changes.py).
SCRUBBED = {c: value for c, value in SCRUBBED_ROW.items() if c in FACT_COLUMNS["customer"]}
