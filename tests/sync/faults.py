"""Helpers for the sync fault tests: a faulty HTTP proxy, backlogs, central backups, views.

Everything here talks to real processes: shop nodes (`shopnode serve`), the central node
(`shopnode central serve`) and `shopnode sync` rounds, over HTTP on 127.0.0.1. Node
databases are read with plain sqlite3 (read queries only) while the nodes serve.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sync.protocol import PULL_PATH, PUSH_PATH, STATUS_PATH
from tests.conftest import call
from tests.processes import Central, NodeProcess, shopnode, spawn, start_node

# register_store is re-exported: the fault tests import it from here.
from tests.sync.conftest import PG_DSN, Shops, post, register_store  # noqa: F401

# -- waiting ---------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- shops -----------------------------------------------------------------------------------


def shop_env(shops: Shops, name: str, central_url: str | None = None,
             interval: int = 3600) -> dict[str, str]:  # fmt: skip
    """The environment of a new shop node, its store registered at central in-process."""
    return shops.env_for(name, central_url, interval)


def start_shops(shops: Shops, *names: str, central_url: str | None = None, interval: int = 3600,
                database: Path | None = None) -> list[NodeProcess]:  # fmt: skip
    """Start shop nodes side by side (like `shops.start`); stopped by the `shops` fixture.

    `database`: a prepared shop.db (see `make_backlog`) the first of them starts on.
    """
    envs = [shop_env(shops, name, central_url, interval) for name in names]
    if database is not None:
        (shops.tmp_path / names[0]).mkdir(parents=True)
        shutil.copyfile(database, shops.tmp_path / names[0] / "shop.db")
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(start_node, env, shops.tmp_path / f"{name}.log")
                   for env, name in zip(envs, names, strict=True)]  # fmt: skip
    # Register every node that did start, so the fixture stops it even if another failed.
    shops.nodes.extend(f.result() for f in futures if f.exception() is None)
    return [f.result() for f in futures]


def node_name(node: NodeProcess) -> str:
    return node.env["SHOPNODE_NODE_NAME"]


def start_shop(shops: Shops, name: str, **kw: Any) -> NodeProcess:
    return start_shops(shops, name, **kw)[0]


def restart_shop(node: NodeProcess, **env: str) -> NodeProcess:
    """Start a stopped node again on its data dir (same store token), in place."""
    return node.restart(**env)


def backup_node(node: NodeProcess, tmp_path: Path) -> Path:
    """`shopnode backup FILE` while the node serves."""
    backup_file = tmp_path / f"{node_name(node)}-backup.db"
    result = shopnode("backup", str(backup_file), env=node.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return backup_file


def restore_node(node: NodeProcess, backup_file: Path, **env: str) -> None:
    """Stop the node, put its backup file back in place of shop.db, start it again."""
    assert node.stop() == 0
    database = shop_db(node)
    for suffix in ("-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    shutil.copyfile(backup_file, database)
    restart_shop(node, **env)


def sale(node: NodeProcess, customer_id: str, total: int, method: str = "account") -> dict:
    return post(node, "/api/v1/sales", {"customer_id": customer_id, "total": total,
                                        "payment_method": method})  # fmt: skip


def pay(node: NodeProcess, customer_id: str, amount: int) -> dict:
    return post(node, f"/api/v1/customers/{customer_id}/ledger",
                {"type": "credit", "amount": amount})  # fmt: skip


def sync_status(node: NodeProcess) -> dict[str, Any]:
    status, body = call(node, "GET", "/api/v1/sync/status")
    assert status == 200, body
    return body


def wait_round_done(*nodes: NodeProcess, timeout: float = 30) -> None:
    """Wait until each node's own worker has finished a round (the start-up one)."""
    for node in nodes:

        def finished(node: NodeProcess = node) -> bool:
            status = sync_status(node)
            return status["last_attempt_at"] is not None and not status["running"]

        wait_for(finished, timeout, f"a finished sync round at {node.env['SHOPNODE_NODE_NAME']}")


def sync_popen(node: NodeProcess, log: Path) -> subprocess.Popen:
    """`shopnode sync` for this node as a child we can kill; output goes to `log`."""
    return spawn("sync", env=node.env, log=log)


def shop_db(node: NodeProcess) -> Path:
    return Path(node.env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"


# -- a backlog of changes, written as fast as the node's own domain code allows ---------------


def make_backlog(path: Path, count: int, customers: int = 20, seed: int = 1) -> None:
    """Record `count` changes (customers, sales, payments) in the shop database at `path`.

    Uses the node's own domain code in this process, 250 changes per transaction; works on a
    fresh file (a prepared database for `start_shop`) and on the file of a serving node
    (WAL: like a second client).
    """
    from node import customers as customer_domain
    from node import ledger, sales
    from node.db import database, fetch_all, open_database
    from node.settings import seed_settings

    rng = random.Random(seed)
    db = open_database(path)
    try:
        seed_settings({"earn_rate": 1, "point_value": 10, "currency": "USD",
                       "default_credit_limit": None})  # fmt: skip
        ids = [r["id"] for r in fetch_all("SELECT id FROM customer WHERE anonymized_at IS NULL")]
        made = 0
        while made < count:
            with database.atomic():
                for _ in range(min(250, count - made)):
                    roll = rng.random()
                    if len(ids) < customers or roll < 0.04:
                        name = f"Backlog {len(ids)} {rng.randrange(10**6)}"
                        ids.append(customer_domain.create_customer({"name": name})["id"])
                    elif roll < 0.25:  # sales cost twice what payments do to record
                        method = rng.choice(["cash", "card", "account"])
                        sales.record_sale(rng.choice(ids), rng.randrange(100, 20000), method)
                    else:
                        ledger.record_entry(rng.choice(ids), "credit", rng.randrange(1, 5000),
                                            "Payment received")  # fmt: skip
                    made += 1
    finally:
        db.close()


# -- reading a node's database -----------------------------------------------------------------


def node_rows(node: NodeProcess, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(sqlite3.connect(shop_db(node), timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


def node_meta(node: NodeProcess, key: str) -> str | None:
    rows = node_rows(node, "SELECT value FROM meta WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def change_ids(node: NodeProcess, origins: list[str] | None = None) -> list[str]:
    """Change ids in the node's change log (of the given origins, else all)."""
    if origins is None:
        return [r[0] for r in node_rows(node, "SELECT id FROM change_log")]
    marks = ", ".join("?" for _ in origins)
    sql = f"SELECT id FROM change_log WHERE origin IN ({marks})"
    return [r[0] for r in node_rows(node, sql, tuple(origins))]


def own_origins(node: NodeProcess) -> list[str]:
    previous = json.loads(node_meta(node, "previous_origin_ids") or "[]")
    return [node_meta(node, "origin_id"), *previous]


def money_state(node: NodeProcess) -> dict[str, list[tuple]]:
    """Everything that must be identical on every node once synced."""
    return {
        "customers": node_rows(node, "SELECT id, ledger_balance, loyalty_points, total_spent, "
                                     "total_orders FROM customer ORDER BY id"),  # fmt: skip
        "ledger": node_rows(node, "SELECT id, customer_id, type, amount FROM ledger_entry "
                                  "ORDER BY id"),  # fmt: skip
        "sales": node_rows(node, "SELECT id, receipt_number, total, refunded_amount FROM sale "
                                 "ORDER BY id"),  # fmt: skip
        "points": node_rows(node, "SELECT id, customer_id, points FROM loyalty_event ORDER BY id"),
    }


def sync_reports(node: NodeProcess) -> list[tuple]:
    return node_rows(node, "SELECT kind, change_id, detail FROM sync_report ORDER BY id")


# -- central over raw HTTP ---------------------------------------------------------------------


def http_answer(url: str, token: str | None, data: bytes | None = None, headers: dict | None = None,
                timeout: float = 30) -> tuple[int, str, Any]:  # fmt: skip
    """A request (POST when there is `data`; no Authorization without `token`): its status,
    Content-Type and JSON answer."""
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(
        url, data=data, method="POST" if data is not None else "GET",
        headers={**auth, **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.loads(error.read())


def http_json(url: str, token: str, data: bytes | None = None,
              headers: dict | None = None, timeout: float = 30) -> tuple[int, Any]:  # fmt: skip
    status, _, answer = http_answer(url, token, data, headers, timeout)
    return status, answer


def push_answer(central_url: str, token: str, payload: dict) -> tuple[int, str, Any]:
    """A raw push (gzip'd, as a node sends it): status, Content-Type and JSON answer."""
    data = gzip.compress(json.dumps(payload).encode())
    return http_answer(central_url + PUSH_PATH, token, data, {"Content-Encoding": "gzip"})


def raw_push(central_url: str, token: str, payload: dict) -> tuple[int, Any]:
    status, _, answer = push_answer(central_url, token, payload)
    return status, answer


def raw_pull(central_url: str, token: str, after: int, limit: int = 1000,
             origin: str = "observer-origin") -> dict[str, Any]:  # fmt: skip
    query = urllib.parse.urlencode({"after": after, "limit": limit, "origin": origin})
    status, body = http_json(f"{central_url}{PULL_PATH}?{query}", token)
    assert status == 200, body
    return body


def central_changes(central_url: str, token: str) -> list[dict[str, Any]]:
    """Every change central holds, in cursor order (pulled as an origin nobody uses)."""
    cursor, held = 0, []
    while True:
        page = raw_pull(central_url, token, cursor)
        held.extend(page["changes"])
        cursor = page["next"]
        if not page["more"]:
            return held


def central_status(central_url: str, token: str) -> dict[str, Any]:
    status, body = http_json(central_url + STATUS_PATH, token)
    assert status == 200, body
    return body


# -- central backups -------------------------------------------------------------------------

CENTRAL_TABLES = ("store", "origin", "change", "quarantine", "meta", "tombstone")


class CentralBackup:
    """An operator's backup of the central database, and its restore over the live one.

    SQLite: SQLite's online backup API into a file; restore copies it over central.db (and
    drops the -wal/-shm files). PostgreSQL: the tables copied into `bk_*` tables of the same
    schema plus the sequence positions (what pg_dump/pg_restore would bring back).
    """

    def __init__(self, central: Central, tmp_path: Path) -> None:
        self.url = central.env["SHOPNODE_CENTRAL_DATABASE"]
        self.file = tmp_path / "central-backup.db"
        self.sequences: dict[str, tuple[int, bool]] = {}

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    @property
    def schema(self) -> str:
        return self.url.rsplit("%3D", 1)[1]

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.split("sqlite:///", 1)[1])

    def _pg(self):
        import psycopg2

        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = False
        return conn

    def take(self) -> None:
        if not self.postgres:
            with closing(sqlite3.connect(self.sqlite_path)) as source, \
                    closing(sqlite3.connect(self.file)) as target:  # fmt: skip
                source.backup(target)
            return
        with closing(self._pg()) as conn, conn, conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for table in CENTRAL_TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {self.schema}.bk_{table}")
                cur.execute(f"CREATE TABLE {self.schema}.bk_{table} AS "
                            f"SELECT * FROM {self.schema}.{table}")  # fmt: skip
            for table, column in (("change", "gseq"), ("quarantine", "id")):
                cur.execute("SELECT pg_get_serial_sequence(%s, %s)",
                            (f"{self.schema}.{table}", column))  # fmt: skip
                sequence = cur.fetchone()[0]
                cur.execute(f"SELECT last_value, is_called FROM {sequence}")
                self.sequences[sequence] = cur.fetchone()

    def restore(self) -> None:
        """Put the backup back (central must be stopped)."""
        if not self.postgres:
            for suffix in ("-wal", "-shm"):
                Path(str(self.sqlite_path) + suffix).unlink(missing_ok=True)
            shutil.copyfile(self.file, self.sqlite_path)
            return
        tables = ", ".join(f"{self.schema}.{t}" for t in CENTRAL_TABLES)
        with closing(self._pg()) as conn, conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {tables}")
            for table in CENTRAL_TABLES:
                cur.execute(f"INSERT INTO {self.schema}.{table} "
                            f"SELECT * FROM {self.schema}.bk_{table}")  # fmt: skip
            for sequence, (value, called) in self.sequences.items():
                cur.execute("SELECT setval(%s, %s, %s)", (sequence, value, called))


def restart_central(central: Central) -> None:
    """Start central again on its database and its old port (the shops know that URL)."""
    url = central.url
    central.restart(SHOPNODE_CENTRAL_PORT=str(central.port))
    assert central.url == url, (central.url, url)


# -- a proxy that loses answers ------------------------------------------------------------------


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of central, serving from its own thread.

    Transparent by default. `fail_next_push(how)` lets the next push through to central, waits
    for central's answer (so central has committed) and then, instead of that answer, drops
    the connection (`how="drop"`) or answers 502 (`how="502"`). `latency` seconds are added
    before each answer is passed on (a slow link). `hold()` keeps requests waiting at the
    proxy (`waiting` counts them) until `release()`, to start several clients at once.
    """

    def __init__(self, target: str, latency: float = 0.0) -> None:
        self.target = target.rstrip("/")
        self.url = ""
        self.latency = latency
        self.pending: list[str] = []  # faults for the next pushes, in order
        self.faults_done: list[tuple[str, int, Any]] = []  # (how, central status, answer)
        self.waiting = 0
        self._gate: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()

    def hold(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)

    def fail_next_push(self, how: str) -> None:
        assert how in ("drop", "502")
        self.pending.append(how)

    async def _start(self) -> str:
        self._gate = asyncio.Event()
        self._gate.set()
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not self._gate.is_set():
            self.waiting += 1
            await self._gate.wait()
            self.waiting -= 1
        # aiohttp has already un-gzipped the body: forward it plain.
        keep = ("authorization", "content-type", "accept-encoding")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        fault = self.pending.pop(0) if request.path == PUSH_PATH and self.pending else None
        async with self._http.request(request.method, self.target + request.path_qs,
                                      data=body, headers=headers) as answer:  # fmt: skip
            payload = await answer.read()
            status = answer.status
            out_headers = {k: v for k, v in answer.headers.items()
                           if k.lower() in ("content-type", "content-encoding")}  # fmt: skip
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None:
            text = gzip.decompress(payload) if out_headers.get("Content-Encoding") else payload
            self.faults_done.append((fault, status, json.loads(text)))
            if fault == "drop":
                request.transport.close()  # central's answer never reaches the node
                return web.Response(status=204)
            return web.Response(status=502, text="502 Bad Gateway")
        return web.Response(body=payload, status=status, headers=out_headers)


def kill_when(proc: subprocess.Popen, started: Callable[[], bool], rng: random.Random,
              extra: tuple[float, float] = (0.0, 0.2), timeout: float = 30) -> int:  # fmt: skip
    """SIGKILL `proc` a random moment after `started()` turns true; its exit code."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not started():
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the sync never got going")
        time.sleep(0.01)
    time.sleep(rng.uniform(*extra))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(30)
