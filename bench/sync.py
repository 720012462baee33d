"""Sync throughput: central ingest over HTTP vs a raw batched insert, and a node's catch-up.

1. Ingest. --stores stores x --changes-per-store changes, shaped like what node/changes.py
   writes for customers, payments and sales (facts per kind, as sync/protocol.check_change
   accepts them: customer.created, ledger.credit|debit, sale.recorded with its points event
   and, for account sales, its ledger debit; ~420 bytes of JSON body on average), are pushed
   to a real central node (`python -m node central serve` in a subprocess, SQLite and/or
   PostgreSQL) in gzip'd batches of 500 by --pushers concurrent pushers (one store's batches
   in order, as its worker sends them). The payloads are built and compressed before the
   clock starts, so the figure is the central node's. Next to it, in the same run and on the
   same engine: the same rows inserted with executemany (SQLite) / multi-row INSERT
   (PostgreSQL) into a plain table with the `change` table's columns and indexes, one
   transaction per 500 rows, no HTTP. Printed: changes/s both ways and ingest/raw.
2. Catch-up. A central node (--catchup-engine) holds --catchup-changes changes of
   --catchup-stores stores (customers created, then payments and sales that refer to them,
   so sync/merge.py applies every one of them). A fresh shop database (node.db.open_database)
   runs `python -m node sync` in a subprocess: wall time, changes/s applied and the peak RSS
   of the subprocess: its VmHWM, polled from /proc every 20 ms until it exits (the kernel's
   high-water mark, so polling misses nothing but the last 20 ms). Not ru_maxrss: the kernel
   folds the *parent's* high-water mark into the child's at exec, so a child of this process,
   which holds the generated data, would report ~200 MB whatever it used. The node's books
   (totals it derives from the facts) are then checked against the generator's totals, and
   node/verify.differences() must be empty.
3. Convergence. --converge-nodes shop nodes, each with --converge-local changes of its own
   made by the real domain code (customers, payments, sales), run `python -m node sync` at
   the same time against a fresh central (each pushes its own and pulls everything the
   others made), round after round until every node holds the same change log and the same
   balances. Printed: time and rounds until converged.
4. --profile: where the time goes, in process: a push's parts at central (payload parse,
   check_change, CentralStore.push under cProfile) on each engine, and apply_page over the
   first --profile-changes catch-up changes under cProfile with every SQL statement counted.

Run: python bench/sync.py [--stores 20] [--changes-per-store 50000] [--engine both]
     [--pushers 6] [--catchup-changes 200000] [--converge-nodes 3] [--profile]
Full size takes ~25 min on a loaded 2-CPU machine (generating 1M changes alone ~2 min).
Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`) for --engine postgresql or
both; it works in its own schema, dropped at the end. Everything else lives in a temporary
directory removed at the end; the only network traffic is to 127.0.0.1. Every phase is
bounded by --timeout seconds; subprocesses are stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gzip
import hashlib
import inspect
import io
import json
import os
import pstats
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a clean checkout without installing the package
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.common import INGEST_TARGETS, PROCS, cpu_seconds, stop_all, vm_hwm_kb  # noqa: E402
from node.changes import encode_body  # noqa: E402
from sync.protocol import (  # noqa: E402
    CHANGE_FIELDS,
    PUSH_PATH,
    STATUS_PATH,
    batches,
    check_change,
    gzip_json,
)
from sync.store import CentralStore, schema  # noqa: E402
from tests import processes  # noqa: E402

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=wal",
    "PRAGMA synchronous=full",
    "PRAGMA busy_timeout=10000",
)  # as sync/store.py opens the central database


MARKS = re.compile(r"\(\?(, \?)*\)")  # a statement's placeholder list, for grouping


class BenchError(Exception):
    """Something the benchmark cannot carry on from."""


# --------------------------------------------------------------------------- change bodies
# The same bodies node/changes.py records (see node/customers.py, node/ledger.py,
# node/sales.py, node/loyalty.py): facts per kind, never totals (sync/protocol.py FACTS).

FIRST = ("James Mary John Patricia Robert Jennifer Michael Linda Priya Rahul Amit Sunita Wei "
         "Mei Hiroshi Yuki Olga Ivan Anna Lukas Hannah Emma Noah Amara Kwame Fatima Omar "
         "Layla Hassan Sofia Mateo Diego Camila").split()  # fmt: skip
LAST = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Sharma Patel Gupta Singh "
        "Khan Wang Li Zhang Tanaka Sato Ivanov Novak Kowalski Muller Schmidt Okafor Mensah "
        "Haddad Rossi Silva Santos Nguyen").split()  # fmt: skip
STREETS = ("Market Street", "Station Road", "Church Lane", "Mill Road", "High Street",
           "Bazaar Road", "Park Avenue", "Temple Street")  # fmt: skip
TAGS = (["regular"], ["wholesale"], ["regular", "credit"], [], ["staff"], ["vip"])
PAYMENT_NOTES = ("Payment received", "Cash payment", "UPI payment", "Part payment, cash",
                 "Bank transfer")  # fmt: skip

# Shares of the non-customer changes: payments, manual debits, cash/card sales, account sales.
MIX = (("ledger.credit", 0.45), ("ledger.debit", 0.15), ("sale.cash", 0.32),
       ("sale.account", 0.08))  # fmt: skip
STEP_MS = 1000  # one change per second per store, ending a few minutes before now
# Generated changes go through sync/protocol.check_change: the first CHECK_ALL of each store,
# then one in CHECK_EVERY (central and the node check every one anyway).
CHECK_ALL, CHECK_EVERY = 2000, 50


class IdMaker:
    """UUIDv7 text at a given millisecond, monotonic like node.clock.uuid7 but much cheaper."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.last_ms = 0
        self.counter = 0

    def __call__(self, ms: int) -> str:
        if ms <= self.last_ms:
            ms, self.counter = self.last_ms, self.counter + 1
            if self.counter >= 1 << 12:
                ms, self.counter = ms + 1, 0
        else:
            self.counter = 0
        self.last_ms = ms
        value = ((ms << 80) | (0x7 << 76) | (self.counter << 64) | (0b10 << 62)
                 | self.rng.getrandbits(62))  # fmt: skip
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def iso_ms(ms: int) -> str:
    """node.clock.iso of a millisecond timestamp: RFC 3339 UTC, milliseconds, Z."""
    return f"{_iso_second(ms // 1000)}{ms % 1000:03d}Z"


@dataclass
class Totals:
    """What the books of a node holding these changes must add up to."""

    changes: int = 0
    customers: int = 0
    ledger_balance: int = 0
    loyalty_points: int = 0
    total_spent: int = 0
    total_orders: int = 0
    body_bytes: int = 0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class StoreData:
    name: str
    origin: str
    payloads: list[tuple[bytes, int]]  # (gzip'd push body, last origin_seq in it)
    totals: Totals
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def wire_bytes(self) -> int:
        return sum(len(p) for p, _ in self.payloads)


def customer_row(rng: random.Random, customer_id: str, stamp: str, n: int) -> dict[str, Any]:
    """A customer fact: the columns node/models.py FACT_COLUMNS["customer"] lists (a node
    derives phone_digits and updated_at itself)."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "id": customer_id, "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{n}@example.com" if rng.random() < 0.7 else None,
        "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(0, 9999):04d}",
        "address": f"{rng.randint(1, 300)} {rng.choice(STREETS)}, Springfield",
        "notes": "Prefers delivery after 6pm" if rng.random() < 0.1 else None,
        "tags": json.dumps(rng.choice(TAGS)), "credit_limit": None, "created_at": stamp,
    }  # fmt: skip


def generate_store(name: str, n: int, customers: int, seed: int, end_ms: int) -> StoreData:
    """One store's change log: `customers` customers created along the way, then payments,
    manual debits and sales referring to them, as node/changes.py would have logged them:
    facts only (customer.created {"customer": [row]}, ledger.credit|debit {"ledger_entry":
    [row]}, sale.recorded {"sale": [row], "loyalty_event": [earn], "ledger_entry": [debit]
    for account sales}); the totals are what a node must derive from them."""
    rng = random.Random(seed)
    new_id = IdMaker(rng)
    start_ms = end_ms - n * STEP_MS
    origin = new_id(start_ms - 1)
    totals = Totals()
    kinds: dict[str, int] = {}
    known: list[str] = []
    receipts: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    kind_names = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    for seq in range(1, n + 1):
        ms = start_ms + seq * STEP_MS + rng.randint(0, STEP_MS - 1)
        stamp = iso_ms(ms)
        left = n - seq + 1
        if not known or (len(known) < customers and rng.random() < (customers - len(known)) / left):
            kind = "customer.created"
        else:
            kind = rng.choices(kind_names, weights)[0]
        body: dict[str, list[dict[str, Any]]] = {}
        if kind == "customer.created":
            entity = new_id(ms)
            body["customer"] = [customer_row(rng, entity, stamp, len(known))]
            known.append(entity)
            totals.customers += 1
            change_kind = kind
        elif kind.startswith("ledger."):
            customer, entry_type = rng.choice(known), kind.split(".")[1]
            amount = rng.randint(50, 500) * 10 if entry_type == "credit" else rng.randint(1, 2000)
            entity = new_id(ms)
            description = rng.choice(PAYMENT_NOTES) if entry_type == "credit" else "Manual debit"
            body["ledger_entry"] = [{
                "id": entity, "customer_id": customer, "type": entry_type, "amount": amount,
                "description": description, "reference_id": None, "reverses_id": None,
                "created_at": stamp,
            }]  # fmt: skip
            totals.ledger_balance += amount if entry_type == "credit" else -amount
            change_kind = kind
        else:
            customer = rng.choice(known)
            method = "account" if kind == "sale.account" else rng.choice(("cash", "card"))
            total = rng.randint(150, 15_000)
            earned = total // 100  # earn rate 1 point per major unit, USD
            day = stamp[:10].replace("-", "")
            receipts[day] = receipts.get(day, 0) + 1
            receipt = f"REC-{day}-{receipts[day]:03d}"
            entity = new_id(ms)
            body["sale"] = [{
                "id": entity, "origin": origin, "customer_id": customer,
                "receipt_number": receipt, "total": total, "discount_amount": 0,
                "payment_method": method, "points_earned": earned, "points_redeemed": 0,
                "created_at": stamp,
            }]  # fmt: skip
            if earned:  # node/loyalty.add_event writes no event for 0 points
                body["loyalty_event"] = [{
                    "id": new_id(ms), "customer_id": customer, "kind": "earn", "points": earned,
                    "sale_id": entity, "description": f"Earned on {receipt}", "created_at": stamp,
                }]  # fmt: skip
                totals.loyalty_points += earned
            totals.total_spent += total
            totals.total_orders += 1
            if method == "account":
                body["ledger_entry"] = [{
                    "id": new_id(ms), "customer_id": customer, "type": "debit", "amount": total,
                    "description": f"Sale {receipt}", "reference_id": entity,
                    "reverses_id": None, "created_at": stamp,
                }]  # fmt: skip
                totals.ledger_balance -= total
            change_kind = "sale.recorded"
        text = encode_body(body)
        kinds[change_kind] = kinds.get(change_kind, 0) + 1
        totals.body_bytes += len(text)
        change = {
            "id": new_id(ms), "origin": origin, "origin_seq": seq,
            "hlc": f"{ms:015d}-{0:06d}-{origin}", "kind": change_kind, "entity_id": entity,
            "body": text, "recorded_at": iso_ms(ms + 1),
        }  # fmt: skip
        if seq <= CHECK_ALL or seq % CHECK_EVERY == 0:
            check_change(change)  # what central and the node check; ProtocolError if not
        out.append(change)
    totals.changes = n
    payloads = [(gzip_json({"origin": origin, "changes": batch}), batch[-1]["origin_seq"])
                for batch in batches(out)]  # fmt: skip
    return StoreData(name, origin, payloads, totals, kinds)


def generate(
    prefix: str, stores: int, per_store: int, customers: int, seed: int
) -> list[StoreData]:
    """Stores' change logs, built in parallel (one process per CPU)."""
    end_ms = time.time_ns() // 1_000_000 - 10 * 60 * 1000
    jobs = [(f"{prefix}-{i:02d}", per_store, customers, seed * 1000 + i, end_ms)
            for i in range(stores)]  # fmt: skip
    workers = min(stores, os.cpu_count() or 1)
    if workers == 1:
        return [generate_store(*job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(generate_store, *zip(*jobs, strict=True)))


def decode_payload(payload: bytes) -> list[dict[str, Any]]:
    return json.loads(gzip.decompress(payload))["changes"]


# --------------------------------------------------------------------------- processes


class Central(processes.Central):
    """`python -m node central serve`, started by the tests' launcher, with what the
    benchmark measures of it."""

    def add_stores(self, names: list[str]) -> list[str]:
        """Tokens from `python -m node central add-store`, a few registrations at a time."""

        def one(name: str) -> str:
            try:
                return self.add_store(name, timeout=120)["token"]
            except RuntimeError as exc:
                raise BenchError(str(exc)) from None

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, names))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the central process so far."""
        return cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        return vm_hwm_kb(self.proc.pid) / 1024

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        code = processes.stop(self.proc, sig, timeout)
        if self.proc in PROCS:
            PROCS.remove(self.proc)
        return code


def start_central(database_url: str, cwd: Path, label: str) -> Central:
    cwd.mkdir(parents=True, exist_ok=True)
    env = processes.child_env({"SHOPNODE_CENTRAL_DATABASE": database_url,
                               "SHOPNODE_CENTRAL_PORT": "0",
                               "SHOPNODE_CENTRAL_HOST": "127.0.0.1"})  # fmt: skip
    log = cwd / f"central-{label}.log"
    central = Central(("central", "serve"), env, log, log, cwd)
    try:
        central.start(timeout=60)
    except processes.StartFailed as exc:
        raise BenchError(f"central ({label}): {exc}") from None
    PROCS.append(central.proc)
    return central


@dataclass
class SyncRun:
    name: str
    wall: float
    rc: int
    peak_rss_mb: float  # VmHWM, polled (see the top of the file for why not ru_maxrss)
    summary: str
    applied: int
    cpu: float  # user + system seconds, from wait4


def run_syncs(envs: dict[str, dict[str, str]], cwd: Path, timeout: float,
              prefix: list[str] | None = None) -> dict[str, SyncRun]:  # fmt: skip
    """`python -m node sync` for several nodes at once; wall time and peak RSS of each."""
    started: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    for name, env in envs.items():
        out = cwd / f"sync-{name}.out"
        with open(out, "w") as fh:
            command = [*(prefix or [sys.executable]), "-m", "node", "sync"]
            proc = subprocess.Popen(command, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=cwd)  # fmt: skip
        PROCS.append(proc)
        started[name] = (proc, time.perf_counter(), out)
    results: dict[str, SyncRun] = {}
    hwm = dict.fromkeys(envs, 0)
    deadline = time.monotonic() + timeout
    while len(results) < len(started):
        for name, (proc, t0, out) in started.items():
            if name in results:
                continue
            hwm[name] = max(hwm[name], vm_hwm_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            PROCS.remove(proc)
            text = out.read_text()
            lines = [line for line in text.splitlines() if line.startswith("sync ")]
            summary = lines[-1] if lines else text.strip()[-500:]
            applied = re.search(r"\((\d+) new\)", summary)
            results[name] = SyncRun(name, wall, proc.returncode, hwm[name] / 1024,
                                    summary,
                                    int(applied.group(1)) if applied else 0,
                                    usage.ru_utime + usage.ru_stime)  # fmt: skip
        if time.monotonic() > deadline:
            for name, (proc, _, _) in started.items():
                if name not in results:
                    proc.kill()
            stop_all()
            raise BenchError(f"sync did not finish within {timeout:.0f} s")
        time.sleep(0.02)
    return results


# --------------------------------------------------------------------------- ingest


@dataclass
class PushStats:
    changes: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.changes / self.seconds


async def push_stores(url: str, stores: list[tuple[str, StoreData]], pushers: int,
                      timeout: float) -> PushStats:  # fmt: skip
    """Each pusher takes a store and sends its batches in order, checking every ack."""
    queue = list(reversed(stores))
    latencies: list[float] = []

    async def pusher(http: aiohttp.ClientSession) -> None:
        while queue:
            token, data = queue.pop()
            headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip",
                       "Content-Type": "application/json"}  # fmt: skip
            for payload, last_seq in data.payloads:
                t0 = time.perf_counter()
                async with http.post(url + PUSH_PATH, data=payload, headers=headers) as response:
                    body = await response.json(content_type=None)
                latencies.append(time.perf_counter() - t0)
                if response.status != 200 or body.get("acked_seq") != last_seq:
                    raise BenchError(f"push for {data.name} answered {response.status}: {body}")

    connector = aiohttp.TCPConnector(limit=pushers)
    client_timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(pusher(http) for _ in range(pushers))), timeout)
        seconds = time.perf_counter() - start
    return PushStats(sum(d.totals.changes for _, d in stores), seconds, latencies)


async def central_status(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.get(url + STATUS_PATH, headers=headers) as response:
            return await response.json()


def change_table_ddl(postgres: bool) -> list[str]:
    """The central `change` table's DDL (columns, keys, indexes), renamed raw_change."""
    statements = schema(postgres)
    table = [s for s in statements if "TABLE change " in s]
    index = [s for s in statements if "ON change(" in s]
    if len(table) != 1 or not index:
        raise BenchError("could not find the change table's DDL in sync/store.py")
    return [table[0].replace("TABLE change ", "TABLE raw_change ")] + [
        s.replace("ON change(", "ON raw_change(").replace("INDEX change_", "INDEX raw_change_")
        for s in index
    ]


def raw_insert(engine: str, target: str, stores: list[StoreData]) -> PushStats:
    """The same rows into a plain table like `change`: one transaction per batch, no HTTP.
    Only the insert and commit are timed; decoding the payloads is not."""
    columns = (*CHANGE_FIELDS, "received_at")
    received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    postgres = engine == "postgresql"
    if postgres:
        import psycopg2
        from psycopg2.extras import execute_values

        conn = psycopg2.connect(PG_DSN, options=f"-c search_path={target}")
        sql = f"INSERT INTO raw_change({', '.join(columns)}) VALUES %s"
    else:
        conn = sqlite3.connect(target, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO raw_change({', '.join(columns)}) VALUES ({marks})"
    cur = conn.cursor()
    for statement in change_table_ddl(postgres):
        cur.execute(statement)
    if postgres:
        conn.commit()
    spent, count = 0.0, 0
    # Interleave the stores batch by batch, as the concurrent pushers do.
    for round_ in range(max(len(s.payloads) for s in stores)):
        for data in stores:
            if round_ >= len(data.payloads):
                continue
            rows = [(*(c[f] for f in CHANGE_FIELDS), received)
                    for c in decode_payload(data.payloads[round_][0])]  # fmt: skip
            t0 = time.perf_counter()
            if postgres:
                execute_values(cur, sql, rows, page_size=500)
                conn.commit()
            else:
                cur.execute("BEGIN IMMEDIATE")
                cur.executemany(sql, rows)
                cur.execute("COMMIT")
            spent += time.perf_counter() - t0
            count += len(rows)
    cur.execute("SELECT COUNT(*) FROM raw_change")
    held = cur.fetchone()[0]
    conn.close()
    if held != count:
        raise BenchError(f"raw insert holds {held} rows, expected {count}")
    return PushStats(count, spent, [])


class Postgres:
    """A throwaway schema in the test database, dropped on close."""

    def __init__(self) -> None:
        import psycopg2

        self.conn = psycopg2.connect(PG_DSN)
        self.conn.autocommit = True
        self.schemas: list[str] = []

    def new_schema(self) -> str:
        schema = "bench_sync_" + uuid.uuid4().hex[:10]
        self.conn.cursor().execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        return schema

    def url(self, schema: str) -> str:
        return f"{PG_URL}?options=-c%20search_path%3D{schema}"

    def drop(self, schema: str) -> None:
        self.conn.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.schemas.remove(schema)

    def close(self) -> None:
        for name in list(self.schemas):
            self.drop(name)
        self.conn.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def ingest(engine: str, args: argparse.Namespace, tmp: Path, data: list[StoreData],
           pg: Postgres | None) -> dict[str, Any]:  # fmt: skip
    """Phase 1 on one engine: HTTP ingest, then the raw baseline."""
    print(f"\n== ingest on {engine}: {len(data)} stores x {data[0].totals.changes:,} changes, "
          f"{args.pushers} concurrent pushers ==", flush=True)  # fmt: skip
    work = tmp / f"ingest-{engine}"
    schema = pg.new_schema() if pg else None
    url = pg.url(schema) if pg and schema else f"sqlite:///{work / 'central.db'}"
    central = start_central(url, work, engine)
    try:
        tokens = central.add_stores([d.name for d in data])
        stats = asyncio.run(push_stores(central.url, list(zip(tokens, data, strict=True)),
                                        args.pushers, args.timeout))  # fmt: skip
        status = asyncio.run(central_status(central.url, tokens[0]))
        central_rss = central.peak_rss_mb()
        central_cpu = central.cpu_seconds()
    finally:
        central.stop()
    expected = sum(d.totals.changes for d in data)
    if status["changes"] != expected or status["quarantined"]:
        raise BenchError(f"central holds {status}, expected {expected} changes, none quarantined")
    lat = stats.latencies
    print(f"  ingest over HTTP : {stats.changes:,} changes in {stats.seconds:.1f} s = "
          f"{stats.rate:,.0f} changes/s  (push p50 {pct(lat, 0.5) * 1000:.0f} ms, "
          f"p99 {pct(lat, 0.99) * 1000:.0f} ms)", flush=True)  # fmt: skip
    print(f"  central process  : {central_cpu:.1f} CPU-s in all (add-store included) = "
          f"{stats.changes / central_cpu:,.0f} changes per CPU-second; peak RSS "
          f"{central_rss:.0f} MB", flush=True)  # fmt: skip
    target = schema if pg and schema else str(work / "raw.db")
    raw = raw_insert(engine, target, data)
    ratio = stats.rate / raw.rate
    print(f"  raw batched insert: {raw.changes:,} rows in {raw.seconds:.1f} s = "
          f"{raw.rate:,.0f} rows/s", flush=True)  # fmt: skip
    print(f"  ingest / raw     : {ratio:.2f}  (target >= {INGEST_TARGETS[engine]})", flush=True)
    if pg and schema:
        pg.drop(schema)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"ingest": stats.rate, "raw": raw.rate, "ratio": ratio, "seconds": stats.seconds,
            "central_rss_mb": central_rss, "central_cpu": central_cpu}  # fmt: skip


# --------------------------------------------------------------------------- node books


def node_env(data_dir: Path, central: Central, token: str) -> dict[str, str]:
    return processes.child_env(
        {
            "SHOPNODE_NODE_DATA_DIR": str(data_dir),
            "SHOPNODE_SYNC_CENTRAL_URL": central.url,
            "SHOPNODE_SYNC_TOKEN": token,
        }
    )


def fresh_node(data_dir: Path) -> Path:
    """A new shop database, created by the real code, then closed."""
    from node.db import open_database

    path = data_dir / "shop.db"
    open_database(path).close()
    return path


def books(path: Path) -> dict[str, Any]:
    """Counts, totals and a fingerprint of every customer's cached balances."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        one = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
        result = {
            "changes": one("SELECT COUNT(*) FROM change_log")[0],
            "customers": one("SELECT COUNT(*) FROM customer")[0],
            "sales": one("SELECT COUNT(*) FROM sale")[0],
            "ledger_entries": one("SELECT COUNT(*) FROM ledger_entry")[0],
            "pending": one("SELECT COUNT(*) FROM sync_pending")[0],
        }
        totals = one("SELECT COALESCE(SUM(ledger_balance), 0), COALESCE(SUM(loyalty_points), 0),"
                     " COALESCE(SUM(total_spent), 0), COALESCE(SUM(total_orders), 0) "
                     "FROM customer")  # fmt: skip
        result.update(zip(("ledger_balance", "loyalty_points", "total_spent", "total_orders"),
                          totals, strict=True))  # fmt: skip
        # The cached balance must equal the sum of the entries for every customer.
        result["ledger_mismatches"] = one(
            "SELECT COUNT(*) FROM customer c WHERE c.ledger_balance <> (SELECT COALESCE(SUM("
            "CASE type WHEN 'credit' THEN amount ELSE -amount END), 0) FROM ledger_entry e "
            "WHERE e.customer_id = c.id)")[0]  # fmt: skip
        result["points_mismatches"] = one(
            "SELECT COUNT(*) FROM customer c WHERE c.loyalty_points <> (SELECT COALESCE(SUM("
            "points), 0) FROM loyalty_event e WHERE e.customer_id = c.id)")[0]  # fmt: skip
        result["reports"] = dict(conn.execute(
            "SELECT kind, COUNT(*) FROM sync_report GROUP BY kind").fetchall())  # fmt: skip
        digest = hashlib.sha256()
        for row in conn.execute("SELECT id, name, ledger_balance, loyalty_points, total_spent, "
                                "total_orders FROM customer ORDER BY id"):  # fmt: skip
            digest.update(repr(row).encode())
        for row in conn.execute("SELECT id FROM change_log ORDER BY id"):
            digest.update(row[0].encode())
        result["fingerprint"] = digest.hexdigest()[:16]
        return result
    finally:
        conn.close()


def verify_node(path: Path) -> list[str]:
    """node/verify.differences() on a shop database (the node's own check that every cached
    total equals what its facts give, and that tombstones hold), opened in this process."""
    from node import verify
    from node.db import open_database

    db = open_database(path, migrate_schema=False)
    try:
        return verify.differences()
    finally:
        db.close()


def check_books(found: dict[str, Any], expected: Totals) -> list[str]:
    problems = []
    for name in ("changes", "customers", "ledger_balance", "loyalty_points", "total_spent",
                 "total_orders"):  # fmt: skip
        if found[name] != getattr(expected, name):
            problems.append(f"{name} {found[name]} != expected {getattr(expected, name)}")
    for name in ("ledger_mismatches", "points_mismatches"):
        if found[name]:
            problems.append(f"{found[name]} customers with {name}")
    if found["reports"]:
        problems.append(f"sync reports {found['reports']}")
    if found["pending"]:
        problems.append(f"{found['pending']} changes still waiting in sync_pending")
    return problems


def make_local_changes(path: Path, count: int, seed: int) -> None:
    """`count` changes of this node's own, made by the real domain code in one transaction."""
    from node import customers, ledger, sales
    from node.db import open_database

    rng = random.Random(seed)
    db = open_database(path)
    ids: list[str] = []
    with db.atomic():
        for i in range(count):
            if not ids or i % 5 == 0:
                first, last = rng.choice(FIRST), rng.choice(LAST)
                ids.append(customers.create_customer({
                    "name": f"{first} {last}", "email": f"{first.lower()}.{i}@example.com",
                    "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(0, 9999):04d}",
                    "address": f"{rng.randint(1, 300)} {rng.choice(STREETS)}", "tags": ["local"],
                })["id"])  # fmt: skip
            elif i % 2:
                ledger.record_entry(rng.choice(ids), "credit", rng.randint(50, 500) * 10, None)
            else:
                sales.record_sale(rng.choice(ids), rng.randint(150, 15_000),
                                  rng.choice(("cash", "card", "account")),
                                  override_credit_limit=True)  # fmt: skip
    db.close()


# --------------------------------------------------------------------------- catch-up


def catchup(args: argparse.Namespace, tmp: Path, pg: Postgres | None) -> dict[str, Any]:
    """Phase 2: a fresh node catches up with `python -m node sync`; its books are checked."""
    data = catchup_data(args)
    work = tmp / "catchup"
    with filled_central(args, work, pg, data, ["fresh-node"]) as (central, node_tokens):
        out = catch_up_fresh_node(args, work, central, node_tokens["fresh-node"], data)
        if args.profile:
            profile_catchup(work, data, args.profile_changes)
    return out


def catchup_data(args: argparse.Namespace) -> list[StoreData]:
    """--catchup-changes changes of --catchup-stores stores, for a node to catch up with."""
    per_store = args.catchup_changes // args.catchup_stores
    print(f"\n== catch-up: a fresh node pulls {per_store * args.catchup_stores:,} changes "
          f"({args.catchup_stores} stores) from a central on {args.catchup_engine} ==",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    data = generate("shop", args.catchup_stores, per_store, args.catchup_customers, args.seed + 1)
    print(f"  generated in {time.perf_counter() - t0:.1f} s; "
          f"{sum(d.totals.customers for d in data):,} customers", flush=True)  # fmt: skip
    return data


@contextlib.contextmanager
def filled_central(
    args: argparse.Namespace, work: Path, pg: Postgres | None, data: list[StoreData],
    nodes: list[str],
) -> Iterator[tuple[Central, dict[str, str]]]:  # fmt: skip
    """A central on --catchup-engine holding `data` (pushed over HTTP), with a store token
    for each of `nodes`; stopped (its schema dropped) on the way out."""
    schema = pg.new_schema() if pg and args.catchup_engine == "postgresql" else None
    url = pg.url(schema) if pg and schema else f"sqlite:///{work / 'central.db'}"
    central = start_central(url, work, "catchup")
    try:
        tokens = central.add_stores([d.name for d in data] + nodes)
        filled = asyncio.run(push_stores(central.url, list(zip(tokens, data, strict=False)),
                                         args.pushers, args.timeout))  # fmt: skip
        print(f"  central filled over HTTP at {filled.rate:,.0f} changes/s", flush=True)
        yield central, dict(zip(nodes, tokens[len(data) :], strict=True))
    finally:
        central.stop()
        if pg and schema:
            pg.drop(schema)


def catch_up_fresh_node(
    args: argparse.Namespace, work: Path, central: Central, token: str, data: list[StoreData]
) -> dict[str, Any]:
    """`python -m node sync` on a new shop database: time, rate, peak RSS; then its books
    against the generator's totals and node/verify."""
    expected = Totals()
    for d in data:
        expected.add(d.totals)
    data_dir = work / "fresh-node"
    db_path = fresh_node(data_dir)
    env = node_env(data_dir, central, token)
    run = run_syncs({"fresh": env}, work, args.timeout)["fresh"]
    if run.rc != 0:
        raise BenchError(f"sync failed ({run.rc}): {run.summary}")
    found = books(db_path)
    problems = check_books(found, expected)
    differences = verify_node(db_path)
    if differences:
        problems.append(f"verify: {len(differences)} differences, e.g. {differences[:3]}")
    out = dict(wall=run.wall, rate=run.applied / run.wall, rss=run.peak_rss_mb,
               problems=problems, db_mb=db_path.stat().st_size / 2**20,
               cpu=run.cpu, central_cpu=central.cpu_seconds())  # fmt: skip
    print(f"  `python -m node sync`: {run.summary}", flush=True)
    print(f"  caught up in {run.wall:.1f} s = {out['rate']:,.0f} changes/s applied; "
          f"peak RSS {run.peak_rss_mb:.0f} MB (VmHWM; target < 150 MB); node db "
          f"{out['db_mb']:.0f} MB", flush=True)  # fmt: skip
    print(f"  CPU: sync process {run.cpu:.1f} s ({run.applied / max(run.cpu, 1e-9):,.0f} "
          f"changes per CPU-second), central {out['central_cpu']:.1f} s so far (fill "
          f"included)", flush=True)  # fmt: skip
    print("  books: " + ("all totals match the generator, cached balances = sums, "
                         "node/verify.differences() empty"
                         if not problems else "; ".join(problems)), flush=True)  # fmt: skip
    return out


def converge(args: argparse.Namespace, tmp: Path, pg: Postgres | None) -> dict[str, Any]:
    """Several nodes with changes of their own sync at once, round after round, each pulling
    everything the others made, until every node holds the same books."""
    names = [f"node-{i}" for i in range(args.converge_nodes)]
    print(f"\n== convergence: {len(names)} nodes with {args.converge_local:,} local changes "
          f"each (real domain code) sync at the same time, central on {args.catchup_engine} ==",
          flush=True)  # fmt: skip
    work = tmp / "converge"
    schema = pg.new_schema() if pg and args.catchup_engine == "postgresql" else None
    url = pg.url(schema) if pg and schema else f"sqlite:///{work / 'central.db'}"
    central = start_central(url, work, "converge")
    try:
        node_tokens = dict(zip(names, central.add_stores(names), strict=True))
        paths, envs = {}, {}
        for i, name in enumerate(names):
            data_dir = work / name
            paths[name] = data_dir / "shop.db"
            t0 = time.perf_counter()
            make_local_changes(paths[name], args.converge_local, args.seed * 7 + i)
            print(f"  {name}: {args.converge_local:,} local changes made in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
            envs[name] = node_env(data_dir, central, node_tokens[name])
        return sync_until_converged(args, work, paths, envs, len(names) * args.converge_local)
    finally:
        central.stop()
        if pg and schema:
            pg.drop(schema)


def sync_until_converged(
    args: argparse.Namespace,
    work: Path,
    paths: dict[str, Path],
    envs: dict[str, dict[str, str]],
    target: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    for round_ in range(1, args.max_rounds + 1):
        runs = run_syncs(envs, work, args.timeout)
        elapsed = time.perf_counter() - start
        found = {name: books(path) for name, path in paths.items()}
        prints = {f["fingerprint"] for f in found.values()}
        held = [f["changes"] for f in found.values()]
        worst = max(r.peak_rss_mb for r in runs.values())
        failed = [r.summary for r in runs.values() if r.rc != 0]
        print(f"  round {round_}: {elapsed:.1f} s since start; change logs {held}; "
              f"max peak RSS {worst:.0f} MB; walls "
              + ", ".join(f"{r.wall:.1f}" for r in runs.values())
              + (f"; failed: {failed}" if failed else ""), flush=True)  # fmt: skip
        if len(prints) == 1 and all(h == target for h in held):
            problems = [f"{f[k]} customers with {k}" for f in found.values()
                        for k in ("ledger_mismatches", "points_mismatches") if f[k]]  # fmt: skip
            problems += [f"{name}: verify: {d}" for name, path in paths.items()
                         for d in verify_node(path)[:3]]  # fmt: skip
            print(f"  converged after {round_} rounds in {elapsed:.1f} s: every node holds "
                  f"{target:,} changes, identical balances"
                  + (f"; PROBLEMS: {problems}" if problems else ""), flush=True)  # fmt: skip
            return {"seconds": elapsed, "rounds": round_, "rss": worst, "problems": problems}
    print(f"  NOT converged after {args.max_rounds} rounds", flush=True)
    return {"seconds": None, "rounds": args.max_rounds, "rss": None}


def profile_catchup(work: Path, data: list[StoreData], limit: int) -> None:
    """What applying pulled pages costs, in process: sync.worker.apply_page over the first
    `limit` catch-up changes (pages interleaved by store, as central serves them) into a fresh
    shop database, under cProfile, with every SQL statement counted and timed."""
    from node import changes
    from node.db import open_database
    from sync.worker import apply_page

    db = open_database(work / "profiled" / "shop.db")
    origin = changes.origin_id()
    stats: dict[str, list[float]] = {}
    execute_sql = db.execute_sql

    def timed(sql: str, params: Any = None, *rest: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute_sql(sql, params, *rest, **kw)
        finally:
            entry = stats.setdefault(MARKS.sub("(..)", sql), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - t0

    db.execute_sql = timed
    rounds = max(len(d.payloads) for d in data)
    pages = [d.payloads[i][0] for i in range(rounds) for d in data if i < len(d.payloads)]
    # Newer worker versions also store the id of the change at the cursor.
    extra = [""] if "next_id" in inspect.signature(apply_page).parameters else []
    profiler = cProfile.Profile()
    count, spent = 0, 0.0
    try:
        for cursor, payload in enumerate(pages, start=1):
            if count >= limit:
                break
            page = decode_payload(payload)
            t0 = time.perf_counter()
            profiler.enable()
            apply_page(page, cursor, *extra, origin)
            profiler.disable()
            spent += time.perf_counter() - t0
            count += len(page)
    finally:
        db.close()
    calls = sum(int(n) for n, _ in stats.values())
    in_sql = sum(t for _, t in stats.values())
    print(f"\n  -- apply_page in process, under cProfile: {count:,} changes in {spent:.1f} s; "
          f"{calls:,} SQL statements ({calls / count:.1f} per change), {in_sql:.1f} s inside "
          f"execute_sql (peewee included) --")  # fmt: skip
    print("     calls  per change  total s  us/call  statement")
    for sql, (n, t) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"  {int(n):8,d}  {n / count:10.2f}  {t:7.2f}  {t / n * 1e6:7.1f}  {sql[:70]}")
    print_profile(pstats.Stats(profiler))


def print_profile(stats: pstats.Stats, lines: int = 18) -> None:
    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats("tottime").print_stats(lines)
    text = buffer.getvalue()
    body = text[text.find("ncalls") :]
    print("  " + "\n  ".join(line[:150] for line in body.strip().splitlines()))


def profile_push(label: str, url: str, data: list[StoreData], batches_: int) -> None:
    """Where a push's time goes at central, in process (no HTTP): decompress + parse the
    payload, check_change on every change (the handler does both in the event loop), then
    CentralStore.push (in the thread pool), which runs under cProfile."""
    store = CentralStore(url)
    try:
        store_id = store.add_store(f"profiled-{label}")["store_id"]
        rounds = min(batches_, max(len(d.payloads) for d in data))
        payloads = [d.payloads[i][0] for i in range(rounds) for d in data if i < len(d.payloads)]
        profiler = cProfile.Profile()
        parse = check = push = 0.0
        count = 0
        for payload in payloads:
            t0 = time.perf_counter()
            message = json.loads(gzip.decompress(payload))
            t1 = time.perf_counter()
            batch = [check_change(c) for c in message["changes"]]
            t2 = time.perf_counter()
            profiler.enable()
            store.push(store_id, message["origin"], batch)
            profiler.disable()
            parse, check = parse + t1 - t0, check + t2 - t1
            push += time.perf_counter() - t2
            count += len(batch)
        us = 1e6 / count
        print(f"\n  -- central push on {label}, in process: {count:,} changes; per change: "
              f"gunzip + json.loads {parse * us:.0f} us, check_change {check * us:.0f} us, "
              f"CentralStore.push {push * us:.0f} us (cProfile of push below) --")  # fmt: skip
        print_profile(pstats.Stats(profiler), 10)
    finally:
        store.close()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--changes-per-store", type=int, default=50_000)
    parser.add_argument("--customers-per-store", type=int, default=1000)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pushers", type=int, default=6, help="concurrent pushing stores")
    parser.add_argument("--catchup-changes", type=int, default=200_000)
    parser.add_argument("--catchup-stores", type=int, default=4)
    parser.add_argument("--catchup-customers", type=int, default=1000, help="per store")
    parser.add_argument("--catchup-engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--converge-nodes", type=int, default=3, help="0 skips it")
    parser.add_argument("--converge-local", type=int, default=2000, help="own changes per node")
    parser.add_argument("--max-rounds", type=int, default=4)
    parser.add_argument("--skip", choices=("ingest", "catchup"), action="append", default=[])
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile CentralStore.push and apply_page in process",
    )
    parser.add_argument(
        "--profile-changes",
        type=int,
        default=40_000,
        help="changes applied under the profiler with --profile",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="where to make the temporary directory")
    args = parser.parse_args()
    if min(args.stores, args.changes_per_store, args.catchup_stores, args.pushers) < 1:
        parser.error("counts must be >= 1")
    if args.catchup_changes < args.catchup_stores:
        parser.error("--catchup-changes must be >= --catchup-stores")

    # SIGTERM unwinds like Ctrl-C, so the finally below stops the subprocesses and cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    needs_pg = "postgresql" in engines or args.catchup_engine == "postgresql"
    pg = Postgres() if needs_pg else None
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-", dir=args.dir))
    results: dict[str, Any] = {}
    try:
        print(f"bench/sync.py on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
              f"load average {os.getloadavg()[0]:.1f}; temp dir {tmp}", flush=True)  # fmt: skip
        if "ingest" not in args.skip:
            t0 = time.perf_counter()
            data = generate("store", args.stores, args.changes_per_store,
                            args.customers_per_store, args.seed)  # fmt: skip
            total = Totals()
            kinds: dict[str, int] = {}
            for d in data:
                total.add(d.totals)
                for kind, n in d.kinds.items():
                    kinds[kind] = kinds.get(kind, 0) + n
            wire = sum(d.wire_bytes for d in data)
            print(f"generated {total.changes:,} changes in {time.perf_counter() - t0:.1f} s: "
                  f"bodies avg {total.body_bytes / total.changes:.0f} bytes of JSON; "
                  f"{sum(len(d.payloads) for d in data):,} gzip'd push batches, "
                  f"{wire / 2**20:.0f} MB on the wire; kinds {kinds}", flush=True)  # fmt: skip
            for engine in engines:
                results[engine] = ingest(engine, args, tmp, data, pg if engine != "sqlite"
                                         else None)  # fmt: skip
            if args.profile:
                profile_push("sqlite", f"sqlite:///{tmp / 'profile-central.db'}", data, 10)
                if pg:
                    schema = pg.new_schema()
                    profile_push("postgresql", pg.url(schema), data, 10)
                    pg.drop(schema)
            del data
        if "catchup" not in args.skip:
            results["catchup"] = catchup(args, tmp, pg)
        if args.converge_nodes:
            results["converge"] = converge(args, tmp, pg)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        if pg:
            pg.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n== summary ==")
    for engine in engines:
        if engine in results:
            r = results[engine]
            print(f"  {engine:<10} ingest {r['ingest']:>8,.0f} changes/s   raw {r['raw']:>8,.0f} "
                  f"rows/s   ingest/raw {r['ratio']:.2f} "
                  f"(target >= {INGEST_TARGETS[engine]})")  # fmt: skip
    if "catchup" in results:
        c = results["catchup"]
        print(f"  catch-up   {c['wall']:.1f} s, {c['rate']:,.0f} changes/s applied "
              f"({c['cpu']:.0f} CPU-s), peak RSS {c['rss']:.0f} MB (target < 150 MB); books "
              + ("ok" if not c["problems"] else "WRONG"))  # fmt: skip
    if "converge" in results:
        v = results["converge"]
        if v["seconds"] is not None:
            print(
                f"  converge   {args.converge_nodes} nodes x {args.converge_local:,} own changes "
                f"in {v['seconds']:.1f} s, {v['rounds']} rounds, max peak RSS {v['rss']:.0f} MB"
                + ("; books WRONG" if v["problems"] else "; books ok")
            )
        else:
            print("  converge   did not converge")
    if (
        results.get("catchup", {}).get("problems")
        or results.get("converge", {}).get("seconds", 0) is None
        or results.get("converge", {}).get("problems")
    ):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
