"""The central node's storage: stores, origins and the change log, on SQLite or PostgreSQL.

Ordering: every push runs under one global lock (SQLite's write lock; a PostgreSQL advisory
lock shared by all central processes), so change ids (`gseq`) are assigned and committed in
the same order. A pull cursor is a gseq; a reader that sees gseq N committed has seen every
smaller one, so no cursor can skip a change under concurrent pushes.

Epochs: a cursor or an acknowledgement means something only against one history of this
database. A central restored from a backup takes a new epoch (`shopnode central restore`,
or on its own when a store shows it acknowledged more than central holds, or a pull cursor
points past or at another change than central holds); a cursor of another epoch starts over
and stores re-send what central lost. Tombstones: once a customer is deleted or anonymized,
every change and quarantined body for them is kept without personal data, forever.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import peewee
from playhouse.db_url import connect, parse
from playhouse.shortcuts import ReconnectMixin

from node.changes import TOMBSTONE_KINDS, same_change, scrubbed_text
from node.clock import now_iso, uuid7
from node.config import ConfigError
from node.files import private_file
from node.migrations import SchemaTooNew, upgrade_body
from sync.protocol import CHANGE_FIELDS

log = logging.getLogger("shopnode.central")

PUSH_LOCK = 7_031_001  # pg_advisory_xact_lock key
AUTO_EPOCH_SECONDS = 600

# The central schema, version by version, for both engines ({serial}: the engine's
# auto-increment key). A database records the version it is at in meta.schema (the first
# release had no meta table: version 1); a newer version than this code knows is refused.
MIGRATIONS: list[list[str]] = [
    [  # 1: the first release
        """CREATE TABLE store (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
        """CREATE TABLE origin (id TEXT PRIMARY KEY,
            store_id TEXT NOT NULL REFERENCES store(id), high_seq BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE change (gseq {serial},
            id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, origin_seq BIGINT NOT NULL,
            hlc TEXT NOT NULL, kind TEXT NOT NULL, entity_id TEXT NOT NULL, body TEXT NOT NULL,
            recorded_at TEXT NOT NULL, received_at TEXT NOT NULL,
            scrubbed INTEGER NOT NULL DEFAULT 0, UNIQUE (origin, origin_seq))""",
        "CREATE INDEX change_entity ON change(entity_id)",
        """CREATE TABLE quarantine (id {serial},
            change_id TEXT, store_id TEXT, origin TEXT, origin_seq BIGINT, body TEXT,
            reason TEXT NOT NULL, received_at TEXT NOT NULL)""",
    ],
    [  # 2: change bodies carry facts (node/changes.py); epochs; tombstones
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE tombstone (customer_id TEXT PRIMARY KEY,
            change_id TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
INSERTED = (*CHANGE_FIELDS, "received_at", "scrubbed")  # a change row but its gseq
SERIAL = {False: "INTEGER PRIMARY KEY AUTOINCREMENT", True: "BIGSERIAL PRIMARY KEY"}


def schema(postgres: bool) -> list[str]:
    """Every statement of the current schema, for one engine."""
    return [step.format(serial=SERIAL[postgres]) for steps in MIGRATIONS for step in steps]


class ReconnectingPostgres(ReconnectMixin, peewee.PostgresqlDatabase):
    """Reconnects when PostgreSQL dropped the connection (restart, pg_terminate_backend):
    a statement or BEGIN outside a transaction that finds it dropped is retried once on a
    new connection; inside a transaction the request fails (503) and the next one
    reconnects."""

    reconnect_errors = (
        (peewee.OperationalError, "server closed the connection"),
        (peewee.OperationalError, "terminating connection"),
        (peewee.OperationalError, "connection to server"),
        (peewee.OperationalError, "ssl connection has been closed"),
        (peewee.InterfaceError, "connection already closed"),
    )


class DatabaseUnavailable(Exception):
    """The central database cannot be reached."""
def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Forbidden(Exception):
    """A store tried to act under another store's identity."""


class CentralStore:
    """All central database work; every method is synchronous and thread-safe. Queries are
    built by peewee for the engine in use; what every push and pull runs (under the push
    lock, for a push) is written out with the engine's placeholder: peewee takes ~150 us
    to build a statement, and pushes queue for the lock (bench/sync.py ingest)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgres://", "postgresql://"))
        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else ""
        if not self.postgres and (not path or path == ":memory:" or "?" in path):
            # A central in memory would hand out store tokens it forgets on stop.
            raise ConfigError("central.database: must be a sqlite:///PATH or "
                              "postgresql://USER@HOST:PORT/DATABASE URL")  # fmt: skip
        if self.postgres:
            try:
                params = parse(url)
            except ValueError as exc:
                raise ConfigError(f"central.database: not a PostgreSQL URL: {exc}") from None
            if not params.get("database"):
                raise ConfigError("central.database: the PostgreSQL URL names no database")
            self.db: peewee.Database = ReconnectingPostgres(**params)
            self._connect_postgres()
        else:
            try:
                private_file(Path(path))  # 0600 in a 0700 directory: it holds customer data
            except OSError as exc:
                raise ConfigError(f"central.database: cannot use {path}: "
                                  f"{exc.strerror or exc}") from None  # fmt: skip
            # The write lock up front: pushes queue for it instead of failing midway.
            self.db = connect(url, pragmas={"journal_mode": "wal", "busy_timeout": 10000,
                                            "synchronous": "full", "secure_delete": 1},
                              lock_type="IMMEDIATE")  # fmt: skip
        # SQLite only: PostgreSQL queues waiters on the advisory lock itself.
        self._one_writer: Any = contextlib.nullcontext() if self.postgres else threading.Lock()
        table = functools.partial(peewee.Table, _database=self.db)
        self.store = table("store", ("id", "name", "token_hash", "created_at"))
        self.origin = table("origin", ("id", "store_id", "high_seq"))
        self.change = table("change", ("gseq", *INSERTED))
        self.quarantine = table("quarantine", ("id", "change_id", "store_id", "origin",
                                               "origin_seq", "body", "reason", "received_at"))
        self.meta = table("meta", ("key", "value"))
        self.tombstone = table("tombstone", ("customer_id", "change_id", "recorded_at"))
        mark = self.db.param
        self._row_marks = f"({self._marks(INSERTED)})"
        self._claim = ("SELECT m.value, o.store_id, o.high_seq FROM meta m "
                       f"LEFT JOIN origin o ON o.id = {mark} WHERE m.key = 'epoch'")  # fmt: skip
        # PostgreSQL: a batch's rows as one JSON parameter, read into `change` rows by the
        # server in the batch's order. A VALUES list has psycopg2 quote every one of ~5,000
        # parameters in this process, under the GIL: 15 us a change, against 3.
        self._insert_json = (
            f"INSERT INTO change({', '.join(INSERTED)}) SELECT "
            f"{', '.join(f'r.{f}' for f in CHANGE_FIELDS)}, {mark}, COALESCE(r.scrubbed, 0) "
            f"FROM json_populate_recordset(NULL::change, {mark}) WITH ORDINALITY AS r "
            "ORDER BY r.ordinality"
        )
        self._set_high = f"UPDATE origin SET high_seq = {mark} WHERE id = {mark}"
        self._page = (
            f"SELECT gseq, {', '.join(CHANGE_FIELDS)} FROM change WHERE gseq > {mark} "
            f"AND gseq <= {mark} AND origin <> {mark} ORDER BY gseq LIMIT {mark}"
        )
        with self.db.atomic():
            self._lock()
            self._migrate()
            if self._meta("epoch") is None:
                self._set_meta("epoch", uuid7())

    def close(self) -> None:
        self.db.close()

    def _connect_postgres(self) -> None:
        """A missing driver or a server that cannot be used is a configuration error of
        one line, naming the key, not a traceback."""
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ConfigError("central.database: PostgreSQL needs its driver: "
                              "pip install 'shopnode[postgres]' (in a checkout: "
                              "pip install '.[postgres]')") from None  # fmt: skip
        try:
            self.db.connect()
        except peewee.DatabaseError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"central.database: cannot use PostgreSQL: {reason}") from None

    def _marks(self, values: Any) -> str:
        """The engine's placeholder once per value."""
        return ", ".join(self.db.param for _ in values)

    def _lock(self) -> None:
        """One writer at a time across central processes (SQLite: the IMMEDIATE lock)."""
        if self.postgres:
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PUSH_LOCK,))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction under the push lock. On SQLite this process's threads queue
        on a Python lock first: waiting inside SQLite's busy handler sleeps in steps of up
        to 100 ms while the lock sits free (bench/sync.py ingest, 4 pool threads)."""
        with self._one_writer, self.db.atomic():
            self._lock()
            yield

    def _has_table(self, name: str) -> bool:
        if self.postgres:  # where CREATE TABLE puts it (peewee's table_exists reads public)
            return self.db.execute_sql(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name = %s)", (name,)
            ).fetchone()[0]
        return self.db.table_exists(name)

    def _version(self) -> int:
        if not self._has_table("change"):
            if self._has_table("meta") or self._has_table("store"):
                raise ConfigError("central.database: this database is not a central's "
                                  "(a shop's database, or another program's?)")  # fmt: skip
            return 0
        if not self._has_table("meta"):
            return 1  # the first release
        found = self._meta("schema") or ""
        if not found.isdigit() or int(found) < 1:
            raise ConfigError(f"central.database: its schema version {found!r} is not one "
                              "shopnode writes; is it a central's database?")  # fmt: skip
        return int(found)

    def _migrate(self) -> None:
        """Bring the schema up to this code's version, one version at a time."""
        version = self._version()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the central database is at schema version {version}, newer than this "
                f"shopnode's {SCHEMA_VERSION}: run the shopnode that wrote it, or a newer one"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS[number - 1]:
                self.db.execute_sql(step.format(serial=SERIAL[self.postgres]))
            if number == 2:
                self._facts_from_first_release()  # nothing to do on a new database
        if version < SCHEMA_VERSION:  # one transaction: all of it, or none
            self._set_meta("schema", str(SCHEMA_VERSION))

    def _meta(self, key: str) -> str | None:
        meta = self.meta
        return meta.select(meta.value).where(meta.key == key).scalar()

    def _set_meta(self, key: str, value: str) -> None:
        meta = self.meta
        meta.insert(key=key, value=value).on_conflict(
            conflict_target=[meta.key], update={meta.value: peewee.EXCLUDED.value}
        ).execute()

    def _facts_from_first_release(self) -> None:
        """Bodies of the first release become facts, exactly as the nodes convert theirs."""
        change, quarantine = self.change, self.quarantine
        for row in change.select(change.id, change.kind, change.body, change.recorded_at).dicts():
            new = upgrade_body(row["kind"], row["body"], row["id"], row["recorded_at"])
            if new != row["body"]:
                change.update(body=new).where(change.id == row["id"]).execute()
        for row in quarantine.select(quarantine.id, quarantine.change_id,
                                     quarantine.body).dicts():  # fmt: skip
            try:
                new = upgrade_body("", row["body"], row["change_id"] or "", "")
            except (ValueError, TypeError, AttributeError, KeyError):
                new = "{}"  # unreadable: keep the record, not the content
            quarantine.update(body=new).where(quarantine.id == row["id"]).execute()
        for row in (
            change.select(change.id, change.entity_id)
            .where(change.kind.in_(TOMBSTONE_KINDS))
            .order_by(change.gseq)
            .dicts()
        ):
            self._tombstone(row["entity_id"], row["id"])

    @property
    def epoch(self) -> str:
        return self._meta("epoch") or ""

    def new_epoch(self, why: str) -> str:
        """Start a new history: every cursor and acknowledgement before it is void."""
        epoch = uuid7()
        self._set_meta("epoch", epoch)
        log.warning("central takes a new epoch %s: %s", epoch, why)
        return epoch

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        try:
            self.db.execute_sql("SELECT 1")
        except peewee.DatabaseError as exc:
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc

    def _high(self) -> int:
        change = self.change
        return change.select(peewee.fn.COALESCE(peewee.fn.MAX(change.gseq), 0)).scalar()

    # -- stores --------------------------------------------------------------------------
    def add_store(self, name: str) -> dict[str, str]:
        token = "st_" + secrets.token_urlsafe(32)
        store_id = uuid7()
        store = self.store
        with self.db.atomic():
            if store.select(store.id).where(store.name == name).exists():
                raise ValueError(f"a store named {name!r} already exists")
            store.insert(id=store_id, name=name, token_hash=_hash(token),
                         created_at=now_iso()).execute()  # fmt: skip
        return {"store_id": store_id, "token": token}

    def store_for_token(self, token: str) -> str | None:
        store = self.store
        return store.select(store.id).where(store.token_hash == _hash(token)).scalar()

    # -- push ----------------------------------------------------------------------------
    def push(self, store_id: str, origin: str, batch: list[dict[str, Any]],
             acked: int | None = None, epoch: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Store a batch of one origin's changes; returns the origin's contiguous high.

        `reused` lists changes whose sequence number central already holds under another
        id: the sender was restored from an old backup and must take a new origin identity.
        Nothing of those is stored. `acked`/`epoch`: what the sender last heard from us; more
        than we hold, in this epoch, means we were restored from a backup: a new epoch.
        `stored`: how many changes of the batch were new (central's ingest metric).
        """
        if any(change["origin"] != origin for change in batch):
            raise Forbidden("every change in a push must carry the push's origin")
        conflicts: list[str] = []
        reused: list[str] = []
        with self._writing():
            high, current = self._claim_origin(store_id, origin)
            if epoch == current and acked is not None and acked > high:
                current = self._noticed_restore(f"origin {origin} was acknowledged up to "
                                                f"{acked} but central holds {high}")  # fmt: skip
            batch = sorted(batch, key=lambda c: c["origin_seq"])
            held = self._held_bodies([c["id"] for c in batch])
            fresh, moved = [], {}
            for change in batch:
                seq = change["origin_seq"]
                if change["id"] in held:
                    body, _, held_origin, held_seq, owner = held[change["id"]]
                    if not same_change(change["kind"], body, change["body"]):
                        self._quarantine(store_id, change, "same id, different body")
                        conflicts.append(change["id"])
                    elif (held_origin, held_seq) != (origin, seq) and owner == store_id:
                        # Held under another of this store's identities (it was restored
                        # from a backup twice and renumbered the change again).
                        moved[change["id"]] = [held_origin, held_seq]
                elif seq <= high or reused:
                    # After a reused number nothing later of this batch may land: it could
                    # depend on the change that has to move to a new origin.
                    reused.append(change["id"])
                elif seq == high + 1 + len(fresh):
                    fresh.append(change)
                # else: a gap; the node re-sends from acked_seq + 1
            if fresh:
                fresh = self._scrub_if_tombstoned(fresh)
                self._insert(fresh)
                high += len(fresh)
                self.db.execute_sql(self._set_high, (high, origin))
                for change in fresh:
                    if change["kind"] in TOMBSTONE_KINDS:
                        self._tombstone(change["entity_id"], change["id"])
        if any(change["kind"] in TOMBSTONE_KINDS for change in fresh):
            self._checkpoint()
        answer = {"acked_seq": high, "conflicts": conflicts, "reused": reused, "epoch": current,
                  "stored": len(fresh)}  # fmt: skip
        return {**answer, "moved": moved} if moved else answer

    def _claim_origin(self, store_id: str, origin: str) -> tuple[int, str]:
        """The origin's contiguous high (a new origin is claimed for this store) and the
        epoch, read in one statement."""
        epoch, owner, high = self.db.execute_sql(self._claim, (origin,)).fetchone()
        if owner is None:
            self.origin.insert(id=origin, store_id=store_id, high_seq=0).execute()
            return 0, epoch
        if owner != store_id:
            raise Forbidden(f"origin {origin} belongs to another store")
        return high, epoch

    def _held_bodies(self, ids: list[str]) -> dict[str, tuple[str, bool, str, int, str]]:
        """Changes held among `ids`: body, scrubbed, origin, sequence, the origin's store."""
        if not ids:
            return {}
        # PostgreSQL: the ids as one JSON parameter (see _insert_json).
        among, params = ((f"SELECT json_array_elements_text({self.db.param})",
                          [orjson.dumps(ids).decode()]) if self.postgres
                         else (self._marks(ids), ids))  # fmt: skip
        rows = self.db.execute_sql(
            "SELECT c.id, c.body, c.scrubbed, c.origin, c.origin_seq, o.store_id FROM change c "
            f"LEFT JOIN origin o ON o.id = c.origin WHERE c.id IN ({among})", params)
        return {id_: (body, bool(scrubbed), held_origin, seq, store)
                for id_, body, scrubbed, held_origin, seq, store in rows}  # fmt: skip

    def _insert(self, fresh: list[dict[str, Any]]) -> None:
        received = now_iso()
        if self.postgres:
            self.db.execute_sql(self._insert_json, (received, orjson.dumps(fresh).decode()))
            return
        for start in range(0, len(fresh), 500):
            chunk = fresh[start : start + 500]
            params = [v for c in chunk for v in (
                *(c[f] for f in CHANGE_FIELDS), received, int(c.get("scrubbed", False)))]
            self.db.execute_sql(
                f"INSERT INTO change({', '.join(INSERTED)}) VALUES "
                + ", ".join(self._row_marks for _ in chunk),
                params,
            )

    def _tombstoned(self, customer_id: str) -> bool:
        stone = self.tombstone
        return stone.select(stone.customer_id).where(stone.customer_id == customer_id).exists()

    def _scrub_if_tombstoned(self, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Creations and edits that arrive after their customer's tombstone are stored
        without personal data (one lookup per batch)."""
        profile = {c["entity_id"] for c in fresh
                   if c["kind"] in ("customer.created", "customer.updated")}  # fmt: skip
        if not profile:
            return fresh
        stones = {customer_id for (customer_id,) in self.db.execute_sql(
            f"SELECT customer_id FROM tombstone WHERE customer_id IN ({self._marks(profile)})",
            sorted(profile))}
        return [{**c, "body": scrubbed_text(c["kind"], c["body"]), "scrubbed": 1}
                if c["entity_id"] in stones and c["entity_id"] in profile
                and c["kind"] in ("customer.created", "customer.updated") else c
                for c in fresh]  # fmt: skip

    def _quarantine(self, store_id: str, change: dict[str, Any], reason: str) -> None:
        body = change["body"]
        if self._tombstoned(change["entity_id"]):
            body = self._scrub_quarantined(body)
        self.quarantine.insert(
            change_id=change["id"], store_id=store_id, origin=change["origin"],
            origin_seq=change["origin_seq"], body=body, reason=reason, received_at=now_iso(),
        ).execute()  # fmt: skip

    def _add_tombstone(self, customer_id: str, change_id: str) -> None:
        stone = self.tombstone
        stone.insert(customer_id=customer_id, change_id=change_id,
                     recorded_at=now_iso()).on_conflict_ignore().execute()  # fmt: skip

    def _tombstone(self, customer_id: str, change_id: str) -> None:
        """A deletion or anonymization: blank the customer in every stored copy, for good."""
        self._add_tombstone(customer_id, change_id)
        change, quarantine = self.change, self.quarantine
        profile = change.kind.in_(("customer.created", "customer.updated"))
        for id_, kind, body in change.select(change.id, change.kind, change.body).where(
            (change.entity_id == customer_id) & profile
        ).tuples():
            change.update(body=scrubbed_text(kind, body), scrubbed=1).where(
                change.id == id_).execute()  # fmt: skip
        # Quarantined copies (same id, other body) of any change about the customer.
        for id_, body in quarantine.select(quarantine.id, quarantine.body).where(
            quarantine.body.contains(customer_id)
        ).tuples():
            quarantine.update(body=self._scrub_quarantined(body)).where(
                quarantine.id == id_).execute()  # fmt: skip

    @staticmethod
    def _scrub_quarantined(body: str) -> str:
        """A quarantined body without personal data: scrubbed as a creation or edit, or, if
        it is not one we can read, nothing of it kept."""
        try:
            for kind in ("customer.created", "customer.updated"):
                body = scrubbed_text(kind, body)
            return body
        except (ValueError, TypeError, AttributeError, RecursionError):
            return "{}"

    def _checkpoint(self) -> None:
        """Truncate the WAL after a scrub, so the old bytes do not linger there (SQLite)."""
        if not self.postgres:
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- pull ----------------------------------------------------------------------------
    def pull(self, after: int, limit: int, origin: str, after_id: str = "",
             epoch: str = "") -> dict[str, Any]:  # fmt: skip
        """Others' changes after `after`, in commit order, up to the high mark read first.

        A cursor comes with central's epoch and the id of the change it points at
        (`next_id`). A cursor of another epoch, or one that points past what central holds
        or at another change (central was restored from an older backup: a new epoch), is
        answered `reset`: the reader starts again from 0, and ids dedupe what it re-reads.
        """
        # Read the high mark first: every change at or below it is committed (see top).
        high = self._high()
        current = self.epoch
        restored = bool(after) and (not epoch or epoch == current) and (
            after > high or bool(after_id) and self._id_at(after) != after_id
        )
        if restored:
            current = self._restored(f"a pull cursor {after} ({after_id}) that central "
                                     "does not hold")  # fmt: skip
        # (A reader that sends no epoch, as the first release did, is reset only by that.)
        if after and (restored or epoch and epoch != current):
            return {"changes": [], "next": 0, "next_id": "", "more": True, "high": high,
                    "reset": True, "epoch": current}  # fmt: skip
        cursor = self.db.execute_sql(self._page, (after, high, origin, limit + 1))
        rows = [dict(zip(("gseq", *CHANGE_FIELDS), row, strict=True)) for row in cursor]
        more = len(rows) > limit
        rows = rows[:limit]
        page = [{**{f: r[f] for f in CHANGE_FIELDS}, "cursor": r["gseq"]} for r in rows]
        if more:
            next_cursor, next_id = rows[-1]["gseq"], rows[-1]["id"]
        else:
            # Nothing more for this reader: skip past its own changes up to the high mark.
            next_cursor, next_id = high, self._id_at(high) if high else ""
        return {"changes": page, "next": next_cursor, "next_id": next_id, "more": more,
                "high": high, "reset": False, "epoch": current}  # fmt: skip

    def _restored(self, why: str) -> str:
        """A new epoch, taken once under the push lock (two readers may notice at once)."""
        with self._writing():
            return self._noticed_restore(why)

    def _noticed_restore(self, why: str) -> str:
        """A new epoch for a restore central noticed by itself; at most one per
        AUTO_EPOCH_SECONDS, so a store that claims restores (a stolen token) cannot make
        every shop re-read central's history round after round (the operator's `central
        restore` is not limited). Caller holds the push lock."""
        last = self._meta("auto_epoch_at")
        now = time.time()
        if last is not None and now - float(last) < AUTO_EPOCH_SECONDS:
            log.warning("not taking a new epoch (one was taken %.0f s ago): %s",
                        now - float(last), why)  # fmt: skip
            return self.epoch
        self._set_meta("auto_epoch_at", repr(now))
        return self.new_epoch(why)

    def _id_at(self, gseq: int) -> str | None:
        return self.change.select(self.change.id).where(self.change.gseq == gseq).scalar()

    def status(self) -> dict[str, Any]:
        # Changes and high in one statement: two would disagree while a push commits.
        changes, high = self.db.execute_sql(
            "SELECT COUNT(*), COALESCE(MAX(gseq), 0) FROM change").fetchone()  # fmt: skip
        return {
            "epoch": self.epoch,
            "tombstones": self.tombstone.select().count(),
            "changes": changes,
            "high": high,
            "stores": self.store.select().count(),
            "quarantined": self.quarantine.select().count(),
        }
