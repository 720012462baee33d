"""The sync fault model (ARCHITECTURE.md), with real processes over real HTTP on 127.0.0.1.

Central runs as `shopnode central serve` (SQLite and PostgreSQL: every test runs for both
unless it says otherwise), shops as `shopnode serve`, rounds as `shopnode sync`. Faults are
made the way they happen: a proxy that loses central's answer, SIGKILL of a sync process,
two sync processes at once, central and node databases restored from older backups, two
central processes over one PostgreSQL.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import call
from tests.processes import Central, NodeProcess, start_central
from tests.sync.conftest import Shops, get, post, sync, synced
from tests.sync.faults import (
    CentralBackup,
    FaultyProxy,
    backup_node,
    central_changes,
    central_status,
    change_ids,
    kill_when,
    make_backlog,
    money_state,
    node_meta,
    node_name,
    own_origins,
    pay,
    raw_pull,
    raw_push,
    register_store,
    restart_central,
    restore_node,
    sale,
    shop_db,
    start_shop,
    start_shops,
    sync_popen,
    sync_reports,
    sync_status,
    wait_for,
    wait_round_done,
)


def assert_converged(central: Central, *nodes: NodeProcess) -> list[dict]:
    """Central holds every node's changes exactly once, quarantines none; the nodes agree."""
    observer = register_store(central, f"observer-{uuid.uuid4().hex[:8]}")
    held = central_changes(central.url, observer["token"])
    held_ids = [c["id"] for c in held]
    assert len(held_ids) == len(set(held_ids)), "central holds a change twice"
    cursors = [c["cursor"] for c in held]
    assert cursors == sorted(set(cursors)), "central's pull order is not strictly increasing"
    assert central_status(central.url, observer["token"])["quarantined"] == 0
    everything: set[str] = set()
    for node in nodes:
        own = change_ids(node, own_origins(node))
        missing = set(own) - set(held_ids)
        assert not missing, f"central lacks {len(missing)} changes of {node_name(node)}"
        everything |= set(own)
    assert set(held_ids) == everything, "central holds changes no node made"
    for node in nodes:
        logged = change_ids(node)
        assert len(logged) == len(set(logged))
        lacking = everything - set(logged)
        assert not lacking, f"{node_name(node)} lacks {len(lacking)} changes: " + ", ".join(
            f"{c['kind']} at cursor {c['cursor']}" for c in held if c["id"] in lacking)
        assert set(logged) == everything
        conflicts = [r for r in sync_reports(node) if r[0] == "conflict"]
        assert conflicts == [], (node_name(node), conflicts)
    states = [money_state(node) for node in nodes]
    for node, state in zip(nodes[1:], states[1:], strict=True):
        for part in state:
            assert state[part] == states[0][part], f"{part} differ: {node_name(node)}"
    return held


# -- 1. central commits a push but its answer is lost ------------------------------------------


def test_push_answer_lost_after_central_committed(shops: Shops, central: Central):
    observer = register_store(central, "observer")
    with FaultyProxy(central.url) as proxy:
        a, b = start_shops(shops, "shop-a", "shop-b")
        a.env["SHOPNODE_SYNC_CENTRAL_URL"] = proxy.url  # `shopnode sync` at A goes through it
        wait_round_done(a, b)
        cid = post(a, "/api/v1/customers", {"name": "Lost Answer"})["id"]
        sale(a, cid, 4000)

        # Central commits the push; the connection drops before its answer arrives.
        proxy.fail_next_push("drop")
        failed = sync(a)
        assert failed.returncode == 1 and "sync failed" in failed.stdout, failed.stdout
        [(how, status, answer)] = proxy.faults_done
        assert (how, status, answer["acked_seq"]) == ("drop", 200, 2)
        assert len(central_changes(central.url, observer["token"])) == 2  # committed
        assert sync_status(a)["push_queue_depth"] == 2  # ...but the node never heard

        # Again with a 502 instead of central's answer, with one more change in the batch.
        pay(a, cid, 1500)
        proxy.fail_next_push("502")
        failed = sync(a)
        assert failed.returncode == 1 and "sync failed" in failed.stdout, failed.stdout
        assert [f[2]["acked_seq"] for f in proxy.faults_done] == [2, 3]
        assert sync_status(a)["push_queue_depth"] == 3

        # The proxy is transparent again: the re-sent batch is acknowledged, not doubled.
        synced(a, b)
        assert proxy.pending == []
        assert sync_status(a)["push_queue_depth"] == 0
        held = assert_converged(central, a, b)
        assert len(held) == 3
        for node in (a, b):
            customer = get(node, f"/api/v1/customers/{cid}")
            assert (customer["ledger_balance"], customer["total_orders"]) == (-2500, 1)


# -- 2. SIGKILL of `shopnode sync` mid-push and mid-pull ------------------------------------------

BACKLOG = 3000  # six push batches, six pull pages


@pytest.fixture(scope="module")
def backlog_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shop database holding BACKLOG unsent changes, made once for the module."""
    path = tmp_path_factory.mktemp("backlog") / "shop.db"
    make_backlog(path, BACKLOG)
    return path


def test_sync_killed_mid_push_and_mid_pull(shops: Shops, central: Central, tmp_path: Path,
                                           backlog_db: Path):  # fmt: skip
    rng = random.Random(20250518)
    observer = register_store(central, "observer")
    # Shop A starts with a backlog; the nodes' start-up rounds find central unreachable (a
    # dead port), so the backlog is still unsent when the `shopnode sync` runs below begin.
    a, b = start_shops(shops, "shop-a", "shop-b", central_url="http://127.0.0.1:9",
                       database=backlog_db)  # fmt: skip
    wait_round_done(a, b)
    a_ids = change_ids(a)
    assert len(a_ids) == BACKLOG and sync_status(a)["push_queue_depth"] == BACKLOG
    # `shopnode sync` reaches central over a slow link (0.1 s a request), so a kill a random
    # moment after the first batch lands can fall anywhere in a later request.
    with FaultyProxy(central.url, latency=0.1) as link:
        for node in (a, b):
            node.env["SHOPNODE_SYNC_CENTRAL_URL"] = link.url

        def central_count() -> int:
            return central_status(central.url, observer["token"])["changes"]

        for attempt in range(2):
            before, log = central_count(), tmp_path / f"push-kill-{attempt}.log"
            proc = sync_popen(a, log)
            code = kill_when(proc, lambda before=before: central_count() > before, rng)
            assert code == -signal.SIGKILL and "sync ok" not in log.read_text(), \
                f"push {attempt} finished before the kill ({code})"  # fmt: skip
        assert 0 < central_count() < BACKLOG, central_count()
        synced(a)
        held = central_changes(central.url, observer["token"])
        assert sorted(c["id"] for c in held) == sorted(a_ids)  # each exactly once
        assert central_status(central.url, observer["token"])["quarantined"] == 0
        assert sync_status(a)["push_queue_depth"] == 0

        def pulled_at_b() -> int:
            return int(node_meta(b, "sync_pull_cursor") or 0)

        for attempt in range(2):
            before, log = pulled_at_b(), tmp_path / f"pull-kill-{attempt}.log"
            proc = sync_popen(b, log)
            code = kill_when(proc, lambda before=before: pulled_at_b() > before, rng)
            assert code == -signal.SIGKILL and "sync ok" not in log.read_text(), \
                f"pull {attempt} finished before the kill ({code})"  # fmt: skip
        assert 0 < len(change_ids(b)) < BACKLOG
        synced(b)
    assert sorted(change_ids(b)) == sorted(a_ids)  # each exactly once
    assert_converged(central, a, b)


# -- 3. two sync workers at once for one node ------------------------------------------------------


def test_two_sync_workers_at_once(shops: Shops, central: Central, tmp_path: Path,
                                  backlog_db: Path):  # fmt: skip
    with FaultyProxy(central.url, latency=0.05) as link:
        link.hold()  # every round waits at the proxy until all have started
        # Each node runs its own worker every second; A starts with a 3000-change backlog.
        a, b = start_shops(shops, "shop-a", "shop-b", central_url=link.url, interval=1,
                           database=backlog_db)  # fmt: skip
        make_backlog(shop_db(b), 200, seed=2)
        # Two `shopnode sync` runs at A, alongside A's own worker (and B's, pushing and pulling).
        logs = [tmp_path / f"worker-{i}.log" for i in (1, 2)]
        procs = [sync_popen(a, log) for log in logs]
        wait_for(lambda: link.waiting >= 2, what="a round of each shop at the proxy")
        time.sleep(1.5)
        # One round per node at a time: A's worker and both runs take turns (the lock
        # beside the database), so only one of A's rounds ever reaches central at once.
        assert link.waiting == 2 and all(p.poll() is None for p in procs)
        link.release()
        codes = [proc.wait(120) for proc in procs]
        outputs = [log.read_text() for log in logs]
        for output in outputs:
            assert "Traceback" not in output, output
        assert codes == [0, 0] and all(o.startswith("sync ok") for o in outputs), outputs
        synced(b, a)
    assert_converged(central, a, b)
    assert sync_status(a)["push_queue_depth"] == sync_status(b)["push_queue_depth"] == 0


# -- 4. central restored from an older backup ------------------------------------------------------


def test_central_restored_from_older_backup(shops: Shops, central: Central, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = post(a, "/api/v1/customers", {"name": "Restored Central"})["id"]
    sale(a, cid, 10000)
    synced(a)
    backup = CentralBackup(central, tmp_path)
    backup.take()
    # Work central will lose: two sales at A, a customer and a payment at B.
    sale(a, cid, 2000)
    sale(a, cid, 3000)
    bid = post(b, "/api/v1/customers", {"name": "Shop B Regular"})["id"]
    pay(b, bid, 1500)
    synced(a, b)  # B's pull cursor is now past everything central will lose

    assert central.stop() == 0
    backup.restore()
    restart_central(central)
    # The shops carry on; A sells twice more, then everyone syncs as usual.
    sale(a, cid, 700)
    sale(a, cid, 800)
    synced(a, b, a)
    held = assert_converged(central, a, b)
    assert len(held) == 6 + 2
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["ledger_balance"], customer["total_orders"]) == (-16500, 5)
        assert get(node, f"/api/v1/customers/{bid}")["ledger_balance"] == 1500


# -- 5. a shop node restored from an older backup -----------------------------------------------


def test_node_restored_from_older_backup(shops: Shops, central: Central, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    wait_round_done(a, b)
    cid = post(a, "/api/v1/customers", {"name": "Restored Shop"})["id"]
    sale(a, cid, 5000)
    synced(a)
    backup_file = backup_node(a, tmp_path)  # everything in it is acknowledged by central
    lost_sale = sale(a, cid, 2500)
    lost_payment = pay(a, cid, 1000)
    synced(a)
    old_origin = sync_status(a)["origin"]

    with closing(sqlite3.connect(backup_file)) as conn:  # the backup predates these
        assert conn.execute("SELECT COUNT(*) FROM sale WHERE id = ?",
                            (lost_sale["id"],)).fetchone() == (0,)  # fmt: skip
    restore_node(a, backup_file)
    wait_round_done(a)  # its start-up round: central holds more of its origin than it does
    status = sync_status(a)
    assert status["origin"] != old_origin and status["last_error"] is None, status
    new_sale = sale(a, cid, 1200)
    synced(a, b)

    assert get(a, f"/api/v1/sales/{lost_sale['id']}")["total"] == 2500  # came back by pull
    ledger_ids = [e["id"] for e in get(a, f"/api/v1/customers/{cid}/ledger?limit=100")]
    assert lost_payment["id"] in ledger_ids
    assert new_sale["receipt_number"] != lost_sale["receipt_number"]
    held = assert_converged(central, a, b)
    assert len(held) == 5
    for node in (a, b):
        customer = get(node, f"/api/v1/customers/{cid}")
        assert (customer["ledger_balance"], customer["total_orders"]) == (-7700, 3)


def test_restored_node_records_a_change_before_it_reaches_central(shops: Shops, central: Central,
                                                                  tmp_path: Path):  # fmt: skip
    """The usual case after a restore: the shop sells before the network is back."""
    a = start_shop(shops, "shop-a")
    wait_round_done(a)
    cid = post(a, "/api/v1/customers", {"name": "Offline After Restore"})["id"]
    sale(a, cid, 5000)
    synced(a)
    backup_file = backup_node(a, tmp_path)
    lost_sale = sale(a, cid, 2500)  # one change the backup lacks, held by central
    synced(a)
    old_origin = sync_status(a)["origin"]

    restore_node(a, backup_file, SHOPNODE_SYNC_CENTRAL_URL="http://127.0.0.1:9")  # offline
    wait_round_done(a)
    assert sync_status(a)["last_error"] is not None  # central was unreachable
    # Takes the origin sequence number, and the receipt number, of the lost sale.
    new_sale = sale(a, cid, 1200)
    a.env["SHOPNODE_SYNC_CENTRAL_URL"] = central.url  # the network is back
    synced(a)

    observer = register_store(central, "observer")
    held = central_changes(central.url, observer["token"])
    lost = []
    if call(a, "GET", f"/api/v1/sales/{lost_sale['id']}")[0] != 200:
        lost.append("the sale the backup lacked never came back to the shop")
    if new_sale["id"] not in {c["entity_id"] for c in held}:
        quarantined = central_status(central.url, observer["token"])["quarantined"]
        lost.append(f"the sale made after the restore never reached central "
                    f"({quarantined} change(s) quarantined there)")  # fmt: skip
    assert not lost, "; ".join(lost)
    assert sync_status(a)["origin"] != old_origin
    assert_converged(central, a)
    customer = get(a, f"/api/v1/customers/{cid}")
    assert (customer["ledger_balance"], customer["total_orders"]) == (-8700, 3)


def test_node_restored_from_backup_holding_unsent_changes(shops: Shops, central: Central,
                                                          tmp_path: Path):  # fmt: skip
    """A backup taken while a change waited to be pushed; the change reached central later."""
    a = start_shop(shops, "shop-a")
    wait_round_done(a)
    cid = post(a, "/api/v1/customers", {"name": "Nightly Backup"})["id"]
    synced(a)
    pending_sale = sale(a, cid, 5000)  # not pushed yet when the backup is taken
    backup_file = backup_node(a, tmp_path)
    lost_payment = pay(a, cid, 1000)
    synced(a)
    old_origin = sync_status(a)["origin"]

    restore_node(a, backup_file)
    wait_round_done(a)  # the start-up round meets central holding more of its origin
    new_payment = pay(a, cid, 300)
    synced(a)
    assert sync_status(a)["origin"] != old_origin
    ledger_ids = [e["id"] for e in get(a, f"/api/v1/customers/{cid}/ledger?limit=100")]
    assert lost_payment["id"] in ledger_ids and new_payment["id"] in ledger_ids
    held = assert_converged(central, a)
    assert pending_sale["id"] in {c["entity_id"] for c in held}
    customer = get(a, f"/api/v1/customers/{cid}")
    assert customer["ledger_balance"] == -5000 + 1000 + 300


# -- 6. two central processes over one PostgreSQL ----------------------------------------------


def synthetic_changes(origin: str, first_seq: int, count: int) -> list[dict]:
    """Well-formed customer creations (central checks every change's shape)."""
    changes = []
    for seq in range(first_seq, first_seq + count):
        customer_id = str(uuid.uuid4())
        changes.append({
            "id": str(uuid.uuid4()), "origin": origin, "origin_seq": seq,
            "hlc": f"{1_700_000_000_000 + seq:015d}-000000-{origin}",
            "kind": "customer.created", "entity_id": customer_id,
            "body": json.dumps({"customer": [{
                "id": customer_id, "name": f"Synthetic {seq}", "email": None, "phone": None,
                "address": None, "notes": None, "tags": "[]", "credit_limit": None,
                "created_at": "2025-01-01T00:00:00.000Z"}]}),
            "recorded_at": "2025-01-01T00:00:00.000Z"})
    return changes  # fmt: skip


@pytest.mark.parametrize("central_database", ["postgresql"], indirect=True)
def test_two_centrals_over_one_postgresql(central: Central, tmp_path: Path):
    second = start_central(central.env, tmp_path / "central-2.log")
    try:
        urls = [central.url, second.url]
        assert urls[0] != urls[1]
        stores = [register_store(central, f"store-{i}") for i in range(4)]
        reader = register_store(central, "reader")
        acked: dict[str, int] = {}  # change id -> seq, for every change central acknowledged
        errors: list[str] = []
        pushing = threading.Event()
        pushing.set()

        def pusher(index: int, token: str) -> None:
            origin = str(uuid.uuid4())
            seq = 1
            try:
                for round_ in range(15):
                    batch = synthetic_changes(origin, seq, 60)
                    status, answer = raw_push(urls[(index + round_) % 2], token,
                                              {"origin": origin, "changes": batch})  # fmt: skip
                    assert status == 200, answer
                    assert (answer["acked_seq"], answer["conflicts"], answer["reused"]) == (
                        seq + 59, [], []), answer  # fmt: skip
                    acked.update((c["id"], c["origin_seq"]) for c in batch)
                    seq += 60
            except Exception as exc:  # reported by the main thread
                errors.append(f"pusher {index}: {exc!r}")

        pulled: list[tuple[int, str]] = []
        pages_while_pushing = []

        def puller() -> None:
            cursor, turn = 0, 0
            try:
                while True:
                    done = not pushing.is_set()  # read before the pull: then it saw the end
                    page = raw_pull(urls[turn % 2], reader["token"], cursor, limit=97)
                    turn += 1
                    if page["changes"] and not done:
                        pages_while_pushing.append(len(page["changes"]))
                    for change in page["changes"]:
                        pulled.append((change["cursor"], change["id"]))
                    cursor = page["next"]
                    if done and not page["more"]:
                        return
            except Exception as exc:
                errors.append(f"puller: {exc!r}")

        threads = [threading.Thread(target=pusher, args=(i, s["token"]))
                   for i, s in enumerate(stores)]  # fmt: skip
        pull_thread = threading.Thread(target=puller)
        pull_thread.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        pushing.clear()
        pull_thread.join(120)
        assert not errors, errors
        assert len(acked) == 4 * 15 * 60
        assert len(pages_while_pushing) >= 2, "the puller never ran alongside the pushers"
        cursors = [cursor for cursor, _ in pulled]
        assert all(x < y for x, y in pairwise(cursors)), "cursor went backwards"
        ids = [change_id for _, change_id in pulled]
        assert len(ids) == len(set(ids)), "a change was pulled twice"
        assert set(ids) == set(acked), f"{len(set(acked) - set(ids))} acknowledged changes skipped"
    finally:
        second.stop()
