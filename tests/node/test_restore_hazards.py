"""What an operator can do to the shop's files by a slip, found by an attack from outside:
restore while an import runs, back up onto the live database, and follow the events feed
across a restore. Each lost payments or facts before it was mended."""

from __future__ import annotations

import csv
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.processes import shopnode, spawn, start_node, stop
from tests.sync.faults import wait_for

ROWS = 60_000


def count(path: Path, sql: str) -> int:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_restore_while_an_import_runs_is_refused_and_the_import_lands(tmp_path: Path) -> None:
    """Every command that opens the database holds its lock: restore refuses while an
    import writes, instead of moving the file aside under it (the import then finished
    'imported N' into the moved-aside file, the shop holding none of them)."""
    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}
    database = tmp_path / "data" / "shop.db"
    start_node(env, tmp_path / "node.log").stop(signal.SIGTERM)  # creates the shop, stopped
    backup = tmp_path / "last-night.db"
    assert shopnode("backup", str(backup), env=env).returncode == 0

    people = tmp_path / "people.csv"
    with people.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["name", "phone", "email"])
        out.writerows([f"Imported {i}", f"+1555{i:07d}", f"p{i}@example.org"]
                      for i in range(ROWS))  # fmt: skip

    importing = spawn("import", "customers", str(people), env=env, log=tmp_path / "import.log")
    try:
        imported = "SELECT count(*) FROM customer WHERE name LIKE 'Imported %'"
        wait_for(lambda: count(database, imported) > 0, 60, "the import to start writing")
        restored = shopnode("restore", str(backup), env=env)
        assert importing.wait(120) == 0
    finally:
        stop(importing, signal.SIGKILL)
    said = (tmp_path / "import.log").read_text()
    assert f"imported {ROWS}" in said

    assert restored.returncode == 2, restored.stdout
    assert "restore refused" in restored.stderr and "import" in restored.stderr
    assert count(database, imported) == ROWS


@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_backup_onto_the_live_database_path_loses_nothing(tmp_path: Path, suffix: str) -> None:
    """`shopnode backup data/shop.db` (a slip for `data/` or `backups/shop.db`) while the node
    serves: the checked copy is renamed over the live database. The node keeps writing into
    the unlinked file; its next checkpoint leaves shop.db + shop.db-wal that do not belong
    together, and after a restart every payment answered 201 since is gone and the file is
    'database disk image is malformed'. Expected: backup refuses a target that is the
    database (or its -wal/-shm), and nothing is changed. With `shop.db-wal` as the target
    it is worse: after a SIGKILL the shop is back to its last checkpoint (0 customers) and
    `shopnode verify` says ok."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import call

    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}
    database = tmp_path / "data" / "shop.db"
    node = start_node(env, tmp_path / "node.log")
    try:
        status, customer = call(node, "POST", "/api/v1/customers", {"name": "Asha"})
        assert status == 201
        backed_up = shopnode("backup", f"{database}{suffix}", env=env)
        assert backed_up.returncode == 1 and "shop's database" in backed_up.stderr
        payments = 3000  # enough WAL for SQLite's automatic checkpoint (1000 pages)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(
                lambda i: call(node, "POST", f"/api/v1/customers/{customer['id']}/ledger",
                               {"type": "credit", "amount": 1})[0], range(payments)))  # fmt: skip
        assert statuses.count(201) == payments
    finally:
        node.stop(signal.SIGKILL)
    verified = shopnode("verify", env=env)
    assert verified.returncode == 0, (backed_up.stdout + backed_up.stderr + verified.stdout
                                      + verified.stderr)  # fmt: skip
    assert count(database, "SELECT count(*) FROM ledger_entry") == payments


def test_events_feed_never_reuses_a_cursor_after_a_restore(tmp_path: Path) -> None:
    """An integration follows /api/v1/events and keeps `next_cursor`. After a restore from
    last night's backup, new facts get the cursors the lost ones had: the integration asks
    `after=<its cursor>` and silently skips them (README: a short page means caught up)."""
    from tests.conftest import call

    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}
    node = start_node(env, tmp_path / "node.log")
    for name in ("A1", "A2"):
        assert call(node, "POST", "/api/v1/customers", {"name": name})[0] == 201
    assert shopnode("backup", str(tmp_path / "bk.db"), env=env).returncode == 0
    for name in ("B1", "B2", "B3"):
        assert call(node, "POST", "/api/v1/customers", {"name": name})[0] == 201
    cursor = call(node, "GET", "/api/v1/events?after=0&limit=100")[1]["next_cursor"]
    node.stop(signal.SIGTERM)
    assert shopnode("restore", str(tmp_path / "bk.db"), env=env).returncode == 0
    node.start()
    try:
        for name in ("C1", "C2", "C3", "C4"):
            assert call(node, "POST", "/api/v1/customers", {"name": name})[0] == 201
        page = call(node, "GET", f"/api/v1/events?after={cursor}&limit=100")[1]
    finally:
        node.stop(signal.SIGKILL)
    seen = {event["entity_id"] for event in page["events"]}
    assert len(seen) == 4, f"after restore the integration at cursor {cursor} sees {page}"
