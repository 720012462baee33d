"""Issue 8, the nine sync-hardening scenarios, over real processes.

Central runs as `shopnode central serve` (SQLite and PostgreSQL through the `central`
fixture, unless a test says otherwise), shops as `shopnode serve`, rounds as `shopnode sync`.
A hostile or buggy store is a registered store token used over raw HTTP; a change an older
central accepted without checking is written straight into central's database. Every test
ends with the shops converged (same customers, same money) and `shopnode verify` exiting 0
on every node.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from node import hlc
from node.changes import encode_body
from node.clock import now_iso, uuid7
from sync.protocol import PULL_PATH
from sync.store import CentralStore
from tests.conftest import call
from tests.processes import Central, NodeProcess, shopnode
from tests.sync.conftest import PG_DSN, Shops, get, post, synced
from tests.sync.faults import (
    CentralBackup,
    FaultyProxy,
    backup_node,
    central_changes,
    central_status,
    http_answer,
    money_state,
    node_meta,
    node_name,
    node_rows,
    pay,
    push_answer,
    raw_pull,
    raw_push,
    register_store,
    restart_central,
    restore_node,
    sale,
    start_shop,
    start_shops,
    sync_popen,
    sync_status,
    wait_for,
    wait_round_done,
)

# -- helpers -----------------------------------------------------------------------------------


def create(node: NodeProcess, name: str, **fields: Any) -> str:
    return post(node, "/api/v1/customers", {"name": name, **fields})["id"]


def customer_ids(node: NodeProcess) -> set[str]:
    rows = node_rows(node, "SELECT id FROM customer WHERE anonymized_at IS NULL")
    return {r[0] for r in rows}


def profiles(node: NodeProcess) -> list[tuple]:
    return node_rows(node, "SELECT id, name, email, phone, address, notes, tags, credit_limit, "
                           "anonymized_at IS NOT NULL FROM customer ORDER BY id")  # fmt: skip


def verify(node: NodeProcess) -> str:
    """`shopnode verify` for this node (it may keep serving); its output, asserted ok."""
    result = shopnode("verify", env=node.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and output.startswith("verify ok"), \
        f"verify at {node_name(node)}:\n{output}"  # fmt: skip
    return output


def assert_converged(*nodes: NodeProcess) -> None:
    """Same customers and money on every node; `shopnode verify` ok on each."""
    first = nodes[0]
    for node in nodes[1:]:
        assert profiles(node) == profiles(first), f"customers differ: {node_name(node)}"
        state, reference = money_state(node), money_state(first)
        for part in reference:
            assert state[part] == reference[part], f"{part} differ: {node_name(node)}"
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(verify, nodes))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_change(origin: str, seq: int, kind: str, entity_id: str, body: dict[str, Any],
                stamp: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A change as a node would send it (node/changes.py), under `origin`."""
    return {"id": uuid7(), "origin": origin, "origin_seq": seq,
            "hlc": stamp or hlc.encode(now_ms(), 0, origin), "kind": kind,
            "entity_id": entity_id, "body": encode_body(body),
            "recorded_at": now_iso()}  # fmt: skip


def credit_change(origin: str, seq: int, customer_id: str, amount: int,
                  stamp: str | None = None) -> dict[str, Any]:  # fmt: skip
    entry = uuid7()
    row = {"id": entry, "customer_id": customer_id, "type": "credit", "amount": amount,
           "description": "Payment received", "reference_id": None, "reverses_id": None,
           "created_at": now_iso()}  # fmt: skip
    return make_change(origin, seq, "ledger.credit", entry, {"ledger_entry": [row]}, stamp)


def assert_refused(central: Central, token: str, origin: str, change: dict[str, Any],
                   field: str) -> dict[str, Any]:  # fmt: skip
    """Central refuses a one-change push with 422 problem+json naming the change and field."""
    status, kind, answer = push_answer(central.url, token, {"origin": origin,
                                                            "changes": [change]})  # fmt: skip
    assert status == 422, (status, answer)
    assert kind.startswith("application/problem+json"), kind
    assert "change 0" in answer["detail"] and change["id"] in answer["detail"], answer
    assert answer["errors"][0]["field"].startswith(field), answer
    return answer


def smuggle(central: Central, batch: list[dict[str, Any]]) -> None:
    """Write changes straight into central's database, unchecked: what a central of the
    first release accepted from a buggy or hostile store, still held after the upgrade."""
    store = CentralStore(central.env["SHOPNODE_CENTRAL_DATABASE"])
    try:
        with store.db.atomic():
            store._insert(batch)
    finally:
        store.close()


def central_rows(central: Central, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """Rows of a query on central's database; `{p}` stands for the engine's placeholder."""
    store = CentralStore(central.env["SHOPNODE_CENTRAL_DATABASE"])
    try:
        cursor = store.db.execute_sql(sql.format(p=store.db.param), params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        store.close()


def reports(node: NodeProcess, kind: str) -> int:
    return sync_status(node)["reports"].get(kind, 0)


def files_holding(needle: bytes, *dirs: Path) -> list[str]:
    """Every file under the given directories whose raw bytes contain `needle`."""
    found = []
    for directory in dirs:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path))
    return found


def restore_central(central: Central, backup: CentralBackup, declare: bool) -> None:
    """Stop central, put the backup back, start it again. `declare`: as the runbook says,
    with `shopnode central restore FILE` (SQLite) or pg_restore then `--epoch-only`;
    else the plain file copy, which central has to notice by itself."""
    assert central.stop() == 0
    if declare and not backup.postgres:
        result = shopnode("central", "restore", str(backup.file), env=central.env)
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        backup.restore()
        if declare:
            result = shopnode("central", "restore", "--epoch-only", env=central.env)
            assert result.returncode == 0, result.stdout + result.stderr
    restart_central(central)


# -- 1. the pull cursor after central is restored ------------------------------------------------


def test_1_pull_cursor_does_not_skip_after_central_restore(shops: Shops, central: Central,
                                                           tmp_path: Path):  # fmt: skip
    a, b, c = start_shops(shops, "shop-a", "shop-b", "shop-c")
    observer = register_store(central, "observer")
    wait_round_done(a, b, c)
    shared = create(a, "Shared Regular")
    synced(a, b, c)
    backup = CentralBackup(central, tmp_path)
    backup.take()

    xa = create(a, "Customer XA")
    synced(a)
    xc = create(c, "Customer XC")
    synced(c)  # pushes X_C, pulls X_A: C's cursor points at X_C
    slots = {ch["entity_id"]: ch["cursor"] for ch in central_changes(central.url,
                                                                      observer["token"])}
    restore_central(central, backup, declare=False)  # central has to notice by itself

    xb = create(b, "Customer XB")  # B was offline since the backup
    synced(b)
    held = {ch["entity_id"]: ch["cursor"] for ch in central_changes(central.url,
                                                                     observer["token"])}
    assert held[xb] == slots[xa], "the scenario needs X_B in the slot X_A had"
    synced(c)  # C re-pushes X_C into the slot its cursor points at
    synced(a, b, c)
    everyone = {shared, xa, xb, xc}
    for node in (a, b, c):
        assert customer_ids(node) == everyone, f"{node_name(node)} lacks customers"
    synced(a, b, c)  # and it stays that way
    assert_converged(a, b, c)


# -- 2. a deleted customer's personal data never comes back ------------------------------------

EMAIL = "zelda.quimby.4417@example.org"
EMAIL_Y = "yusuf.ortega.9921@example.net"


def test_2_deleted_customer_never_comes_back(shops: Shops, central: Central, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    backup = CentralBackup(central, tmp_path)
    backup.take()
    x = create(a, "Zelda Quimby", email=EMAIL, phone="+1 555 0199 8877",
               address="12 Quimby Lane")  # fmt: skip
    y = create(a, "Yusuf Ortega", email=EMAIL_Y)  # with history: anonymized, not deleted
    sale(a, y, 800, "cash")
    synced(a, b)
    for gone in (x, y):
        status, answer = call(b, "DELETE", f"/api/v1/customers/{gone}")
        assert status == 200, answer
    synced(b)  # A never hears of the deletions before central is restored

    restore_central(central, backup, declare=True)
    synced(b)  # re-pushes the deletion
    synced(a)  # re-pushes the creation, then pulls the deletion
    d = start_shop(shops, "shop-d")  # a new shop joins
    wait_round_done(d)
    synced(d, b, a, d)

    for node in (a, b, d):
        assert call(node, "GET", f"/api/v1/customers/{x}")[0] == 404, node_name(node)
        held = node_rows(node, "SELECT name, email, phone, address FROM customer WHERE id = ?",
                         (x,))  # fmt: skip
        assert held in ([], [("Deleted customer", None, None, None)]), (node_name(node), held)
        assert node_rows(node, "SELECT kind FROM tombstone WHERE customer_id = ?", (x,)), \
            f"{node_name(node)} holds no tombstone"  # fmt: skip
        held = node_rows(node, "SELECT name, email, anonymized_at IS NOT NULL FROM customer "
                               "WHERE id = ?", (y,))  # fmt: skip
        assert held == [("Deleted customer", None, 1)], (node_name(node), held)
        assert call(node, "GET", f"/api/v1/customers/{y}")[0] == 404, node_name(node)
    dirs = [Path(node.env["SHOPNODE_NODE_DATA_DIR"]) for node in (a, b, d)]
    if not backup.postgres:
        dirs.append(backup.sqlite_path.parent)
    for email in (EMAIL, EMAIL_Y):
        pattern = f"%{email}%"
        for table in ("change", "quarantine"):
            sql = f"SELECT id FROM {table} WHERE body LIKE {{p}}"
            rows = central_rows(central, sql, (pattern,))
            assert rows == [], f"central's {table} table holds {email}"
        assert files_holding(email.encode(), *dirs) == []
    stones = central_rows(central, "SELECT customer_id FROM tombstone")
    assert {x, y} <= {row["customer_id"] for row in stones}
    assert_converged(a, b, d)


# -- 3. a refund that arrives before its sale waits for it -------------------------------------


def test_3_refund_before_its_sale_waits(shops: Shops, central: Central, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Refund First")
    synced(a, b)
    backup = CentralBackup(central, tmp_path)
    backup.take()
    bought = sale(a, cid, 1000)
    synced(a, b)
    post(b, f"/api/v1/sales/{bought['id']}/refund", {})
    synced(b)
    customer = get(b, f"/api/v1/customers/{cid}")
    assert (customer["ledger_balance"], customer["loyalty_points"]) == (0, 0), customer

    restore_central(central, backup, declare=False)
    synced(b)  # the refund reaches central again before its sale does
    d = start_shop(shops, "shop-d")
    wait_round_done(d)  # its start-up round meets the refund without its sale
    status = sync_status(d)
    assert status["last_error"] is None, status
    assert status["pending"] == 1 and status["oldest_pending_age_seconds"] is not None, status
    customer = get(d, f"/api/v1/customers/{cid}")
    assert (customer["ledger_balance"], customer["loyalty_points"]) == (0, 0), customer
    verify(d)

    synced(a)  # the sale comes back
    synced(d, b)
    assert sync_status(d)["pending"] == 0
    for node in (a, b, d):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["ledger_balance"], customer["loyalty_points"],
                customer["total_orders"]) == (0, 0, 0), (node_name(node), customer)  # fmt: skip
        assert get(node, f"/api/v1/sales/{bought['id']}")["refunded_amount"] == 1000
    assert_converged(a, b, d)


# -- 4. a malformed change is refused, and one that got in anyway is quarantined ---------------


def test_4_malformed_changes_refused_or_quarantined(shops: Shops, central: Central):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Malformed Neighbour")
    synced(a, b)
    hostile = register_store(central, "hostile")
    token, origin = hostile["token"], uuid7()
    observer = register_store(central, "observer")
    before = central_status(central.url, observer["token"])["changes"]

    # One bad change refuses the whole batch, naming the change and the field.
    good = credit_change(origin, 1, cid, 100)
    bad = {**credit_change(origin, 2, cid, 100), "hlc": "garbage"}
    status, kind, answer = push_answer(central.url, token, {"origin": origin,
                                                            "changes": [good, bad]})  # fmt: skip
    assert status == 422 and kind.startswith("application/problem+json"), (status, answer)
    assert "change 1" in answer["detail"] and bad["id"] in answer["detail"], answer
    assert answer["errors"][0]["field"] == "changes[1].hlc", answer
    # Other malformed changes, each refused.
    assert_refused(central, token, origin, {**good, "hlc": "2025-06-01T10:00:00Z"},
                   "changes[0].hlc")  # fmt: skip
    assert_refused(central, token, origin, {**good, "kind": "ledger.gift"}, "changes[0].kind")
    assert_refused(central, token, origin, {**good, "entity_id": "42"}, "changes[0].entity_id")
    assert_refused(central, token, origin, {**good, "origin_seq": "1"}, "changes[0].origin_seq")
    assert_refused(central, token, origin, {**good, "body": "{not json"}, "changes[0].body")
    late = json.loads(good["body"])
    late["ledger_entry"][0]["created_at"] = "yesterday"
    assert_refused(central, token, origin, {**good, "body": encode_body(late)},
                   "changes[0].body.ledger_entry[0].created_at")  # fmt: skip
    wrong_amount = json.loads(good["body"])
    wrong_amount["ledger_entry"][0]["amount"] = "100"
    assert_refused(central, token, origin, {**good, "body": encode_body(wrong_amount)},
                   "changes[0].body.ledger_entry[0].amount")  # fmt: skip
    assert central_status(central.url, observer["token"])["changes"] == before
    synced(a, b)

    # Changes central took without checking (first release): one with a garbage stamp, one
    # whose ledger row lacks created_at, then a good payment after them.
    old = uuid7()
    undated = credit_change(old, 2, cid, 100)
    row = json.loads(undated["body"])
    del row["ledger_entry"][0]["created_at"]
    smuggle(central, [{**credit_change(old, 1, cid, 100), "hlc": "garbage"},
                      {**undated, "body": encode_body(row)},
                      credit_change(old, 3, cid, 500)])  # fmt: skip
    for node in (a, b):
        result = shopnode("sync", env=node.env)
        assert result.returncode == 0 and result.stdout.startswith("sync ok"), \
            result.stdout + result.stderr  # fmt: skip
        assert "Traceback" not in result.stdout + result.stderr
        assert reports(node, "quarantined") == 2, sync_status(node)["recent_reports"]
        assert get(node, f"/api/v1/customers/{cid}")["ledger_balance"] == 500
    synced(a, b)  # later rounds carry on, and report nothing new
    for node in (a, b):
        assert reports(node, "quarantined") == 2
    assert_converged(a, b)

    # A ledger row without created_at: the error names that field.
    answer = assert_refused(central, token, origin, {**undated, "body": encode_body(row)},
                            "changes[0].body.ledger_entry[0]")  # fmt: skip
    assert answer["errors"][0]["field"] == "changes[0].body.ledger_entry[0].created_at", answer


# -- 5. a clock far ahead never takes over -------------------------------------------------------

DAY_MS = 24 * 3600 * 1000


def clock_lead_ms(node: NodeProcess) -> int:
    """How far the node's own clock is ahead of the wall clock."""
    return hlc.decode(node_meta(node, "hlc"))[0] - now_ms()


def test_5_far_ahead_clock_does_not_take_over(shops: Shops, central: Central):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Clock Victim", notes="first notes")
    synced(a, b)
    fast = register_store(central, "fast-clock")
    origin = uuid7()
    ahead = hlc.encode(now_ms() + 30 * DAY_MS, 0, origin)
    edit = make_change(origin, 1, "customer.updated", cid,
                       {"customer_id": cid, "fields": {"name": "From The Future"}}, ahead)
    payment = credit_change(origin, 2, cid, 100, hlc.encode(now_ms() + 30 * DAY_MS, 1, origin))
    status, answer = raw_push(central.url, fast["token"], {"origin": origin,
                                                           "changes": [edit, payment]})
    assert status == 200 and answer["acked_seq"] == 2, answer
    # A stamp in another format would sort above every real one as text: refused.
    for stamp in ("2025-06-01T10:00:00Z", f"9{ahead}", ahead.replace("-", ":", 1)):
        wrong = make_change(origin, 3, "customer.updated", cid,
                            {"customer_id": cid, "fields": {"notes": "frozen"}}, stamp)
        assert_refused(central, fast["token"], origin, wrong, "changes[0].hlc")

    synced(a, b)
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert customer["name"] == "Clock Victim", (node_name(node), customer)
        assert customer["ledger_balance"] == 100  # a fact applies; its stamp is not adopted
        status = sync_status(node)
        assert status["pending"] == 1 and status["reports"].get("clock_ahead", 0) >= 1, status
        assert clock_lead_ms(node) <= hlc.MAX_DRIFT_MS, node_name(node)

    # Later real edits elsewhere win, at every shop.
    post_patch(b, cid, {"name": "Real Name"})
    synced(b, a)
    post_patch(a, cid, {"notes": "later notes"})
    synced(a, b)
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["name"], customer["notes"]) == ("Real Name", "later notes"), customer
        assert clock_lead_ms(node) <= hlc.MAX_DRIFT_MS, node_name(node)
        stamps = node_rows(node, "SELECT hlc FROM customer_field_clock WHERE customer_id = ?",
                           (cid,))  # fmt: skip
        assert all(hlc.decode(s)[0] <= now_ms() + hlc.MAX_DRIFT_MS for (s,) in stamps), stamps
        assert sync_status(node)["pending"] == 1  # the far-ahead edit still waits
    assert_converged(a, b)


def post_patch(node: NodeProcess, customer_id: str, fields: dict[str, Any]) -> dict:
    status, answer = call(node, "PATCH", f"/api/v1/customers/{customer_id}", fields)
    assert status == 200, answer
    return answer


# -- 6. central on PostgreSQL: connection lost, database unreachable ---------------------------


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of PostgreSQL, so a test can make the database
    unreachable for central (`cut`) and bring it back (`mend`), and knows which server
    connections are central's (`upstream_ports`)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reachable = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.reachable:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress_os():
                    sock.shutdown(socket.SHUT_RDWR)

    def upstream_ports(self) -> list[int]:
        ports = []
        with self.lock:
            for _, server in self.pairs:
                with suppress_os():
                    ports.append(server.getsockname()[1])
        return ports

    def cut(self) -> None:
        """Unreachable: every connection dropped, new ones closed at once."""
        self.reachable = False
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                with suppress_os():
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def mend(self) -> None:
        self.reachable = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@contextmanager
def suppress_os() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def terminate_backends(ports: list[int]) -> int:
    """pg_terminate_backend for the server connections coming from these client ports."""
    import psycopg2

    with closing(psycopg2.connect(PG_DSN)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
                        (ports,))  # fmt: skip
            return len(cur.fetchall())


def healthz(central: Central) -> tuple[int, dict[str, Any]]:
    status, _, body = http_answer(central.url + "/healthz", None)
    return status, body


@pytest.mark.parametrize("central_database", ["postgresql"], indirect=True)
def test_6_central_survives_postgresql_connection_loss(shops: Shops, central: Central):
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        database = central.env["SHOPNODE_CENTRAL_DATABASE"]
        assert central.stop() == 0
        central.env = {**central.env, "SHOPNODE_CENTRAL_DATABASE":
                       database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")}
        restart_central(central)
        a = start_shop(shops, "shop-a")
        observer = register_store(central, "observer")
        wait_round_done(a)
        cid = create(a, "Reconnect Regular")
        synced(a)
        assert healthz(central) == (200, {"status": "ok", "role": "central", "database": True})

        # PostgreSQL ends central's connections (pg_terminate_backend, as on a restart): the
        # very next requests succeed, whichever of central's connections they use.
        for first in ("healthz", "push", "pull"):
            # Use central's pool threads so each holds a connection, then end them all.
            for _ in range(6):
                assert http_answer(central.url + "/healthz", None)[0] == 200
                raw_pull(central.url, observer["token"], 0)
            assert terminate_backends(proxy.upstream_ports()) >= 1
            if first == "healthz":
                assert healthz(central)[0] == 200
            elif first == "pull":
                raw_pull(central.url, observer["token"], 0)
            pay(a, cid, 100)
            synced(a)
            for _ in range(6):
                status, _, answer = http_answer(f"{central.url}{PULL_PATH}?after=0&limit=5"
                                                f"&origin=x", observer["token"])  # fmt: skip
                assert status == 200, answer
        assert get(a, f"/api/v1/customers/{cid}")["ledger_balance"] == 300

        # The database is unreachable: 503s, never 500s; the shop keeps taking payments.
        for first in ("healthz", "push"):
            proxy.cut()
            status, body = healthz(central)
            assert (status, body["status"], body["database"]) == (503, "unavailable", False), body
            token = observer["token"]
            status, kind, answer = push_answer(central.url, token,
                                               {"origin": uuid7(), "changes": []})  # fmt: skip
            assert status == 503 and kind.startswith("application/problem+json"), answer
            status, kind, answer = http_answer(f"{central.url}{PULL_PATH}?after=0&origin=x",
                                               token)  # fmt: skip
            assert status == 503 and kind.startswith("application/problem+json"), answer
            pay(a, cid, 50)
            failed = shopnode("sync", env=a.env)
            assert failed.returncode == 1 and failed.stdout.startswith("sync failed"), \
                failed.stdout + failed.stderr  # fmt: skip
            assert "Traceback" not in failed.stdout + failed.stderr
            proxy.mend()
            if first == "healthz":
                assert healthz(central)[0] == 200
            synced(a)  # the next push after the database is back goes through
        b = start_shop(shops, "shop-b")
        wait_round_done(b)
        synced(b)
        assert get(b, f"/api/v1/customers/{cid}")["ledger_balance"] == 400
        assert_converged(a, b)
        assert "Traceback" not in central.log.read_text()
    finally:
        proxy.close()


# -- 7. two rounds at once while a restored shop takes a new origin -----------------------------


def test_7_two_rounds_at_once_after_shop_restore(shops: Shops, central: Central,
                                                 tmp_path: Path):  # fmt: skip
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Restored Till")
    sale(a, cid, 5000)
    synced(a)
    backup_file = backup_node(a, tmp_path)
    acknowledged = [pay(a, cid, 1000)["id"], pay(a, cid, 700)["id"]]  # lost in the restore
    synced(a)
    old_origin = sync_status(a)["origin"]

    with FaultyProxy(central.url) as link:
        link.hold()  # the start-up round of the restored node waits at the proxy
        restore_node(a, backup_file, SHOPNODE_SYNC_CENTRAL_URL=link.url,
                     SHOPNODE_SYNC_INTERVAL_SECONDS="1")  # fmt: skip
        wait_for(lambda: link.waiting >= 1, what="A's start-up round at the proxy")
        acknowledged += [pay(a, cid, 300)["id"], pay(a, cid, 200)["id"]]
        logs = [tmp_path / f"cli-sync-{i}.log" for i in (1, 2)]
        procs = [sync_popen(a, log) for log in logs]
        time.sleep(0.5)  # the two `shopnode sync` runs start while the worker's round waits
        link.release()
        for amount in (30, 20, 10):
            acknowledged.append(pay(a, cid, amount)["id"])
            time.sleep(0.2)
        codes = [proc.wait(150) for proc in procs]
        outputs = [log.read_text() for log in logs]
        for code, output in zip(codes, outputs, strict=True):
            assert code == 0 and output.startswith("sync ok"), output
            assert "Traceback" not in output, output
        synced(a, b, a, b)

        observer = register_store(central, "observer")
        held = central_changes(central.url, observer["token"])
        held_ids = [c["id"] for c in held]
        assert len(held_ids) == len(set(held_ids)), "central holds a change twice"
        held_entities = [c["entity_id"] for c in held]
        expected = -5000 + 1000 + 700 + 300 + 200 + 30 + 20 + 10
        for node in (a, b):
            entries = [e["id"] for e in get(node, f"/api/v1/customers/{cid}/ledger?limit=100")]
            for entry in acknowledged:
                assert entries.count(entry) == 1, f"payment {entry} at {node_name(node)}"
            assert get(node, f"/api/v1/customers/{cid}")["ledger_balance"] == expected
        for entry in acknowledged:
            assert held_entities.count(entry) == 1, f"central holds payment {entry} " \
                f"{held_entities.count(entry)} times"  # fmt: skip
        assert sync_status(a)["origin"] != old_origin
        assert sync_status(a)["push_queue_depth"] == 0
        assert "Traceback" not in a.log.read_text()
        assert_converged(a, b)


# -- 8. one reversal per entry --------------------------------------------------------------------


def test_8_double_reversal_keeps_one_and_reports(shops: Shops, central: Central):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Reversed Twice")
    payment = pay(a, cid, 5000)
    synced(a, b)
    path = f"/api/v1/customers/{cid}/ledger/{payment['id']}/reverse"
    at_a = post(a, path, {})  # both shops offline from each other
    at_b = post(b, path, {})
    assert at_a["id"] == at_b["id"], "a reversal's id comes from the entry it reverses"
    synced(a, b, a)
    c = start_shop(shops, "shop-c")
    wait_round_done(c)
    synced(c)
    for node in (a, b, c):
        kept = node_rows(node, "SELECT id, created_at FROM ledger_entry WHERE reverses_id = ?",
                         (payment["id"],))  # fmt: skip
        assert kept == [(at_a["id"], at_a["created_at"])], (node_name(node), kept)
        assert get(node, f"/api/v1/customers/{cid}")["ledger_balance"] == 0
        assert reports(node, "double_reversal") == 1, sync_status(node)["recent_reports"]
    assert call(c, "POST", path, {})[0] == 409  # reversed once is reversed
    synced(a, b, c)
    for node in (a, b, c):
        assert reports(node, "double_reversal") == 1
    assert_converged(a, b, c)


# -- 9. no change can carry a total ---------------------------------------------------------------


def test_9_store_cannot_forge_balances(shops: Shops, central: Central):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = create(a, "Forgery Target")
    pay(a, cid, 1000)
    synced(a, b)
    forger = register_store(central, "forger")
    token, origin = forger["token"], uuid7()
    observer = register_store(central, "observer")
    before = central_status(central.url, observer["token"])["changes"]

    new_id = uuid7()
    row = {"id": new_id, "name": "Forged", "email": None, "phone": None, "address": None,
           "notes": None, "tags": "[]", "credit_limit": None, "created_at": now_iso()}
    payment = credit_change(origin, 1, cid, 1)
    forged = [
        # a customer row carrying a balance
        make_change(origin, 1, "customer.created", new_id,
                    {"customer": [{**row, "ledger_balance": 10**6}]}),
        # a profile edit that sets a total
        make_change(origin, 1, "customer.updated", cid,
                    {"customer_id": cid, "fields": {"ledger_balance": 10**6}}),
        make_change(origin, 1, "customer.updated", cid,
                    {"customer_id": cid, "fields": {"loyalty_points": 500}}),
        # the first release's generic body: rows and adds
        make_change(origin, 1, "ledger.credit", cid, {"rows": [], "adds": [
            {"table": "customer", "id": cid, "column": "ledger_balance", "amount": 10**6}]}),
        # a real payment with an "adds" riding along
        {**payment, "body": encode_body({**json.loads(payment["body"]), "adds": [
            {"table": "customer", "id": cid, "column": "loyalty_points", "amount": 9}]})},
        # a kind that is not a fact
        make_change(origin, 1, "customer.balance_set", cid,
                    {"customer_id": cid, "ledger_balance": 10**6}),
    ]  # fmt: skip
    for change in forged:
        assert_refused(central, token, origin, change, "changes[0]")
    assert central_status(central.url, observer["token"])["changes"] == before
    synced(a, b)
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["ledger_balance"], customer["loyalty_points"]) == (1000, 0), customer

    # The same forgeries held by central from before it checked: quarantined at every node.
    smuggled = [{**change, "origin": origin, "origin_seq": seq}
                for seq, change in enumerate(forged, start=1)]  # fmt: skip
    smuggle(central, smuggled)
    synced(a, b)
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["ledger_balance"], customer["loyalty_points"]) == (1000, 0), customer
        assert call(node, "GET", f"/api/v1/customers/{new_id}")[0] == 404
        assert reports(node, "quarantined") == len(forged), sync_status(node)["recent_reports"]
    assert_converged(a, b)
