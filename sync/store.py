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

import hashlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import peewee
from playhouse.db_url import connect, parse
from playhouse.shortcuts import ReconnectMixin

from node.changes import TOMBSTONE_KINDS, same_change, scrubbed_text
from node.clock import now_iso, uuid7
from node.files import private_file
from node.migrations import upgrade_body
from sync.protocol import CHANGE_FIELDS

log = logging.getLogger("shopnode.central")

PUSH_LOCK = 7_031_001  # pg_advisory_xact_lock key
AUTO_EPOCH_SECONDS = 600

SQLITE_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS store (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS origin (id TEXT PRIMARY KEY,
        store_id TEXT NOT NULL REFERENCES store(id), high_seq BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS change (gseq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, origin_seq BIGINT NOT NULL,
        hlc TEXT NOT NULL, kind TEXT NOT NULL, entity_id TEXT NOT NULL, body TEXT NOT NULL,
        recorded_at TEXT NOT NULL, received_at TEXT NOT NULL,
        scrubbed INTEGER NOT NULL DEFAULT 0, UNIQUE (origin, origin_seq))""",
    "CREATE INDEX IF NOT EXISTS change_entity ON change(entity_id)",
    """CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT,
        change_id TEXT, store_id TEXT, origin TEXT, origin_seq BIGINT, body TEXT,
        reason TEXT NOT NULL, received_at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS tombstone (customer_id TEXT PRIMARY KEY,
        change_id TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
]
SCHEMA_VERSION = "2"  # 2: change bodies carry facts (node/changes.py)


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
POSTGRES_SCHEMA = [
    statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    for statement in SQLITE_SCHEMA
]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Forbidden(Exception):
    """A store tried to act under another store's identity."""


class CentralStore:
    """All central database work; every method is synchronous and thread-safe."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgres://", "postgresql://"))
        if not self.postgres and not url.startswith("sqlite:"):
            raise ValueError("central.database must be a sqlite:/// or postgresql:// URL")
        if self.postgres:
            self.db: peewee.Database = ReconnectingPostgres(**parse(url))
        else:
            path = url.split("sqlite:///", 1)[1]
            if path and path != ":memory:":
                private_file(Path(path))  # 0600 in a 0700 directory: it holds customer data
            self.db = connect(url, pragmas={"journal_mode": "wal", "busy_timeout": 10000,
                                            "synchronous": "full", "secure_delete": 1})  # fmt: skip
            self.db._lock_type = "IMMEDIATE"  # write lock up front: pushes queue, not fail
        with self.db.atomic():
            if self.postgres:
                self._sql("SELECT pg_advisory_xact_lock(?)", (PUSH_LOCK,))
            for statement in POSTGRES_SCHEMA if self.postgres else SQLITE_SCHEMA:
                self.db.execute_sql(statement)
            if self._meta("epoch") is None:
                self._set_meta("epoch", uuid7())
            if self._meta("schema") != SCHEMA_VERSION:
                self._upgrade()

    def close(self) -> None:
        self.db.close()

    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self._sql("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                  "DO UPDATE SET value = excluded.value", (key, value))  # fmt: skip

    def _upgrade(self) -> None:
        """Bodies of the first release become facts, exactly as the nodes convert theirs."""
        for row in self._rows("SELECT id, kind, body, recorded_at FROM change"):
            new = upgrade_body(row["kind"], row["body"], row["id"], row["recorded_at"])
            if new != row["body"]:
                self._sql("UPDATE change SET body = ? WHERE id = ?", (new, row["id"]))
        for row in self._rows("SELECT id, change_id, body FROM quarantine"):
            try:
                new = upgrade_body("", row["body"], row["change_id"] or "", "")
            except (ValueError, TypeError, AttributeError, KeyError):
                new = "{}"  # unreadable: keep the record, not the content
            self._sql("UPDATE quarantine SET body = ? WHERE id = ?", (new, row["id"]))
        for row in self._rows("SELECT id, entity_id, recorded_at FROM change WHERE kind IN "
                              "('customer.deleted', 'customer.anonymized') ORDER BY gseq"):
            self._tombstone(row["entity_id"], row["id"])
        self._set_meta("schema", SCHEMA_VERSION)

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
            self._rows("SELECT 1 AS one")
        except peewee.DatabaseError as exc:
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc

    # -- small helpers: one SQL text for both engines ('?' placeholders) --------------
    def _sql(self, sql: str, params: tuple | list = ()) -> Any:
        return self.db.execute_sql(sql.replace("?", self.db.param), tuple(params))

    def _rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cursor = self._sql(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- stores --------------------------------------------------------------------------
    def add_store(self, name: str) -> dict[str, str]:
        token = "st_" + secrets.token_urlsafe(32)
        store_id = uuid7()
        with self.db.atomic():
            if self._rows("SELECT id FROM store WHERE name = ?", (name,)):
                raise ValueError(f"a store named {name!r} already exists")
            self._sql("INSERT INTO store(id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                      (store_id, name, _hash(token), now_iso()))  # fmt: skip
        return {"store_id": store_id, "token": token}

    def store_for_token(self, token: str) -> str | None:
        rows = self._rows("SELECT id FROM store WHERE token_hash = ?", (_hash(token),))
        return rows[0]["id"] if rows else None

    # -- push ----------------------------------------------------------------------------
    def push(self, store_id: str, origin: str, batch: list[dict[str, Any]],
             acked: int | None = None, epoch: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Store a batch of one origin's changes; returns the origin's contiguous high.

        `reused` lists changes whose sequence number central already holds under another
        id: the sender was restored from an old backup and must take a new origin identity.
        Nothing of those is stored. `acked`/`epoch`: what the sender last heard from us; more
        than we hold, in this epoch, means we were restored from a backup: a new epoch.
        """
        if any(change["origin"] != origin for change in batch):
            raise Forbidden("every change in a push must carry the push's origin")
        conflicts: list[str] = []
        reused: list[str] = []
        with self.db.atomic():
            if self.postgres:
                self._sql("SELECT pg_advisory_xact_lock(?)", (PUSH_LOCK,))
            high = self._claim_origin(store_id, origin)
            current = self.epoch
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
                self._sql("UPDATE origin SET high_seq = ? WHERE id = ?", (high, origin))
                for change in fresh:
                    if change["kind"] in TOMBSTONE_KINDS:
                        self._tombstone(change["entity_id"], change["id"])
        if any(change["kind"] in TOMBSTONE_KINDS for change in fresh):
            self._checkpoint()
        answer = {"acked_seq": high, "conflicts": conflicts, "reused": reused, "epoch": current}
        return {**answer, "moved": moved} if moved else answer

    def _claim_origin(self, store_id: str, origin: str) -> int:
        rows = self._rows("SELECT store_id, high_seq FROM origin WHERE id = ?", (origin,))
        if not rows:
            self._sql("INSERT INTO origin(id, store_id, high_seq) VALUES (?, ?, 0)",
                      (origin, store_id))  # fmt: skip
            return 0
        if rows[0]["store_id"] != store_id:
            raise Forbidden(f"origin {origin} belongs to another store")
        return rows[0]["high_seq"]

    def _held_bodies(self, ids: list[str]) -> dict[str, tuple[str, bool, str, int, str]]:
        """Changes held among `ids`: body, scrubbed, origin, sequence, the origin's store."""
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._rows(
            f"SELECT c.id, c.body, c.scrubbed, c.origin, c.origin_seq, o.store_id FROM change c "
            f"LEFT JOIN origin o ON o.id = c.origin WHERE c.id IN ({marks})", ids)  # fmt: skip
        return {r["id"]: (r["body"], bool(r["scrubbed"]), r["origin"], r["origin_seq"],
                          r["store_id"]) for r in rows}  # fmt: skip

    def _insert(self, fresh: list[dict[str, Any]]) -> None:
        received = now_iso()
        columns = (*CHANGE_FIELDS, "received_at", "scrubbed")
        row_marks = "(" + ", ".join("?" for _ in columns) + ")"
        for start in range(0, len(fresh), 500):
            chunk = fresh[start : start + 500]
            params = [v for c in chunk for v in (
                *(c[f] for f in CHANGE_FIELDS), received, int(c.get("scrubbed", False)))]
            self._sql(
                f"INSERT INTO change({', '.join(columns)}) VALUES "
                + ", ".join(row_marks for _ in chunk),
                params,
            )

    def _tombstoned(self, customer_id: str) -> bool:
        return bool(self._rows("SELECT 1 AS x FROM tombstone WHERE customer_id = ?",
                               (customer_id,)))  # fmt: skip

    def _scrub_if_tombstoned(self, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Creations and edits that arrive after their customer's tombstone are stored
        without personal data (one lookup per batch)."""
        profile = {c["entity_id"] for c in fresh
                   if c["kind"] in ("customer.created", "customer.updated")}  # fmt: skip
        if not profile:
            return fresh
        marks = ", ".join("?" for _ in profile)
        stones = {r["customer_id"] for r in self._rows(
            f"SELECT customer_id FROM tombstone WHERE customer_id IN ({marks})", sorted(profile))}
        return [{**c, "body": scrubbed_text(c["kind"], c["body"]), "scrubbed": True}
                if c["entity_id"] in stones and c["entity_id"] in profile
                and c["kind"] in ("customer.created", "customer.updated") else c
                for c in fresh]  # fmt: skip

    def _quarantine(self, store_id: str, change: dict[str, Any], reason: str) -> None:
        body = change["body"]
        if self._tombstoned(change["entity_id"]):
            body = self._scrub_quarantined(body)
        self._sql(
            "INSERT INTO quarantine(change_id, store_id, origin, origin_seq, body, reason, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (change["id"], store_id, change["origin"], change["origin_seq"], body,
             reason, now_iso()),
        )  # fmt: skip

    def _add_tombstone(self, customer_id: str, change_id: str) -> None:
        self._sql("INSERT INTO tombstone(customer_id, change_id, recorded_at) VALUES (?, ?, ?) "
                  "ON CONFLICT(customer_id) DO NOTHING", (customer_id, change_id, now_iso()))

    def _tombstone(self, customer_id: str, change_id: str) -> None:
        """A deletion or anonymization: blank the customer in every stored copy, for good."""
        self._add_tombstone(customer_id, change_id)
        for row in self._rows("SELECT id, kind, body FROM change WHERE entity_id = ? AND kind "
                              "IN ('customer.created', 'customer.updated')", (customer_id,)):
            self._sql("UPDATE change SET body = ?, scrubbed = 1 WHERE id = ?",
                      (scrubbed_text(row["kind"], row["body"]), row["id"]))  # fmt: skip
        # Quarantined copies (same id, other body) of any change about the customer.
        for row in self._rows("SELECT id, body FROM quarantine WHERE body LIKE ?",
                              (f"%{customer_id}%",)):  # fmt: skip
            self._sql("UPDATE quarantine SET body = ? WHERE id = ?",
                      (self._scrub_quarantined(row["body"]), row["id"]))  # fmt: skip

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
            self._sql("PRAGMA wal_checkpoint(TRUNCATE)")

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
        high = self._rows("SELECT COALESCE(MAX(gseq), 0) AS high FROM change")[0]["high"]
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
        columns = ", ".join(CHANGE_FIELDS)
        rows = self._rows(
            f"SELECT gseq, {columns} FROM change WHERE gseq > ? AND gseq <= ? AND origin <> ? "
            "ORDER BY gseq LIMIT ?",
            (after, high, origin, limit + 1),
        )
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
        with self.db.atomic():
            if self.postgres:
                self._sql("SELECT pg_advisory_xact_lock(?)", (PUSH_LOCK,))
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
        rows = self._rows("SELECT id FROM change WHERE gseq = ?", (gseq,))
        return rows[0]["id"] if rows else None

    def status(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "tombstones": self._rows("SELECT COUNT(*) AS n FROM tombstone")[0]["n"],
            "changes": self._rows("SELECT COUNT(*) AS n FROM change")[0]["n"],
            "high": self._rows("SELECT COALESCE(MAX(gseq), 0) AS n FROM change")[0]["n"],
            "stores": self._rows("SELECT COUNT(*) AS n FROM store")[0]["n"],
            "quarantined": self._rows("SELECT COUNT(*) AS n FROM quarantine")[0]["n"],
        }
