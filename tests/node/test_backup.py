"""Backups and restore as an owner meets them: scheduled backups in a real `serve`, the
status that reports them, and `shopnode restore` refusing what it must."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import stat
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from node.migrations import SCHEMA_VERSION
from tests.conftest import call
from tests.node.test_migrations import make_v1_database
from tests.processes import NodeProcess, shopnode, start_node
from tests.sync.faults import wait_for

EVERY_2_SECONDS = str(2 / 3600)


def backups_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("shop-*.db"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names_in(path: Path) -> list[str]:
    return [row[0] for row in query(path, "SELECT name FROM customer ORDER BY name")]


def query(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def scheduled(tmp_path: Path) -> dict[str, str]:
    """A node's environment with a backup every 2 seconds, 2 kept."""
    return {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0",
            "SHOPNODE_BACKUP_EVERY_HOURS": EVERY_2_SECONDS, "SHOPNODE_BACKUP_KEEP": "2",
            "SHOPNODE_BACKUP_DIR": str(tmp_path / "data" / "backups"),
            "SHOPNODE_NODE_TIMEZONE": "Asia/Karachi"}  # fmt: skip


def test_scheduled_backups_are_checked_private_pruned_and_in_the_status(scheduled, tmp_path):
    node = start_node(scheduled, tmp_path / "node.log")
    try:
        assert call(node, "POST", "/api/v1/customers", {"name": "Asha"})[0] == 201
        directory = tmp_path / "data" / "backups"
        # Three backups made, two kept; the newest taken after Asha was recorded.
        wait_for(lambda: node.output().count("written and checked") >= 3, 30, "three backups")
        status, body = call(node, "GET", "/api/v1/status")
    finally:
        assert node.stop() == 0
    assert status == 200, body
    kept = backups_in(directory)
    assert len(kept) == 2
    assert sorted(p.name for p in directory.iterdir()) == [p.name for p in kept]  # no leftovers
    assert mode(directory) == 0o700
    for path in kept:
        assert mode(path) == 0o600
        assert query(path, "PRAGMA integrity_check") == [("ok",)]
        assert path.read_bytes()[18:20] == b"\x01\x01"  # one self-contained file, not WAL
    assert names_in(kept[-1]) == ["Asha"]
    reported = body["backup"]
    [newest] = [path for path in kept if path.name == reported["file"]]  # still among them
    assert reported["size_bytes"] == newest.stat().st_size
    stamp = newest.name.removeprefix("shop-").removesuffix(".db")  # 20261201T013000Z
    assert reported["last_at"].replace("-", "").replace(":", "").startswith(stamp[:-1])
    assert reported["last_error"] is None and reported["every_hours"] == pytest.approx(2 / 3600)
    assert body["shop_name"] == "My Shop" and body["version"]
    assert body["timezone"] == "Asia/Karachi"
    assert body["database_size_bytes"] >= (tmp_path / "data" / "shop.db").stat().st_size
    assert body["sync"]["enabled"] is False


def test_status_is_for_owners_only(node: NodeProcess):
    staff = shopnode("token", "create", "--name", "till", "--role", "staff", env=node.env)
    token = staff.stdout.strip().splitlines()[-1]
    status, problem = call(node, "GET", "/api/v1/status", token=token)
    assert status == 403 and "owner" in problem["detail"]
    status, body = call(node, "GET", "/api/v1/status")
    # By default (no [backup] dir) nothing is scheduled, and the status says so.
    assert status == 200 and body["backup"]["every_hours"] == 0
    assert body["backup"]["last_at"] is None and body["backup"]["next_at"] is None


def test_a_failing_backup_is_reported_and_the_node_serves_on(scheduled, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the backup dir should be")
    env = {**scheduled, "SHOPNODE_BACKUP_DIR": str(blocked)}
    node = start_node(env, tmp_path / "node.log")
    try:
        wait_for(lambda: "scheduled backup failed" in node.output(), 30, "a failed backup")
        status, body = call(node, "GET", "/api/v1/status")
        assert status == 200
        assert body["backup"]["last_error"] == "Not a directory"  # the log names the path
        assert body["backup"]["last_error_at"] and "not-a-dir" in node.output()
        assert body["backup"]["last_at"] is None
        assert call(node, "POST", "/api/v1/customers", {"name": "Still Serving"})[0] == 201
    finally:
        assert node.stop() == 0
    assert blocked.read_text() == "a file where the backup dir should be"


def test_backup_command_refuses_a_place_it_cannot_write(node: NodeProcess, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    result = shopnode("backup", str(blocked / "shop.db"), env=node.env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    made = shopnode("backup", str(tmp_path / "copy.db"), env=node.env)
    assert made.returncode == 0, made.stderr
    assert mode(tmp_path / "copy.db") == 0o600


# -- restore ---------------------------------------------------------------------------------


@dataclass
class Stopped:
    """A stopped node that recorded Asha, was backed up to `backup`, then recorded Bala."""

    env: dict[str, str]
    database: Path
    backup: Path
    token: str
    log: Path

    def start(self) -> NodeProcess:
        node = start_node(self.env, self.log)
        node.token = self.token
        return node

    def restore(self, backup: Path) -> CompletedProcess:
        return shopnode("restore", str(backup), env=self.env)


@pytest.fixture
def stopped(tmp_path: Path) -> Stopped:
    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}
    node = start_node(env, tmp_path / "node.log")
    try:
        assert call(node, "POST", "/api/v1/customers", {"name": "Asha"})[0] == 201
        assert shopnode("backup", str(tmp_path / "asha.db"), env=env).returncode == 0
        assert call(node, "POST", "/api/v1/customers", {"name": "Bala"})[0] == 201
    finally:
        assert node.stop() == 0
    return Stopped(env, tmp_path / "data" / "shop.db", tmp_path / "asha.db", node.token,
                   tmp_path / "node.log")  # fmt: skip


def asides(database: Path) -> list[Path]:
    """The databases a restore moved aside (not their -wal or -shm)."""
    return sorted(database.parent.glob("shop.db.before-restore-*[0-9Z]"))


def test_restore_keeps_the_current_database_and_takes_a_new_origin(stopped: Stopped):
    database = stopped.database
    before = digest(database)
    [(origin,)] = query(database, "SELECT value FROM meta WHERE key = 'origin_id'")
    result = stopped.restore(stopped.backup)
    assert result.returncode == 0, result.stderr
    [aside] = asides(database)
    assert digest(aside) == before and names_in(aside) == ["Asha", "Bala"]
    assert names_in(database) == ["Asha"] and mode(database) == 0o600
    assert str(aside) in result.stdout
    node = stopped.start()
    try:
        sync = call(node, "GET", "/api/v1/sync/status")[1]
        assert sync["origin"] != origin and sync["origin"] in result.stdout
        assert [c["name"] for c in call(node, "GET", "/api/v1/customers")[1]] == ["Asha"]
    finally:
        assert node.stop() == 0
    assert shopnode("verify", env=stopped.env).returncode == 0


def test_restore_while_the_node_runs_is_refused(stopped: Stopped):
    node = stopped.start()
    try:
        result = stopped.restore(stopped.backup)
        assert result.returncode == 2
        assert "running" in result.stderr and "stop it first" in result.stderr
        status, found = call(node, "GET", "/api/v1/customers")
        assert status == 200 and len(found) == 2
    finally:
        assert node.stop(signal.SIGKILL) != 0
    assert asides(stopped.database) == []
    # Killed, the node holds nothing any more: the restore goes ahead.
    assert stopped.restore(stopped.backup).returncode == 0


def broken_copy(backup: Path, target: Path) -> Path:
    """The backup with a page of its customer table overwritten: it opens, but is not sound."""
    with sqlite3.connect(backup) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'customer'")
        page = root.fetchone()[0]
    data = bytearray(backup.read_bytes())
    data[(page - 1) * page_size + 8 : page * page_size] = b"\x55" * (page_size - 8)
    target.write_bytes(bytes(data))
    return target


def newer_copy(backup: Path, target: Path) -> Path:
    target.write_bytes(backup.read_bytes())
    with sqlite3.connect(target) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    return target


def garbage(backup: Path, target: Path) -> Path:
    target.write_bytes(b"not a database at all " * 1000)
    return target


@pytest.mark.parametrize("make, words", [
    (broken_copy, "integrity check"),
    (newer_copy, "newer shopnode"),
    (garbage, "not a SQLite database"),
])  # fmt: skip
def test_a_bad_backup_is_refused_and_nothing_changes(stopped: Stopped, tmp_path, make, words):
    database = stopped.database
    bad = make(stopped.backup, tmp_path / "bad.db")
    files_before = {p.name: digest(p) for p in database.parent.iterdir() if p.is_file()}
    result = stopped.restore(bad)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "bad.db" in lines[0], result.stderr
    assert {p.name: digest(p) for p in database.parent.iterdir() if p.is_file()} == files_before
    assert names_in(database) == ["Asha", "Bala"]


def test_a_backup_of_an_older_version_is_upgraded_as_it_is_restored(stopped: Stopped, tmp_path):
    database = stopped.database
    make_v1_database(tmp_path / "old" / "shop.db")
    result = stopped.restore(tmp_path / "old" / "shop.db")
    assert result.returncode == 0, result.stderr
    assert "upgraded from schema version 1" in result.stdout
    assert query(database, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert names_in(database) == ["Old Friend"]
    assert shopnode("verify", env=stopped.env).returncode == 0


def test_a_missing_backup_file_is_refused(stopped: Stopped, tmp_path):
    result = stopped.restore(tmp_path / "nowhere.db")
    assert result.returncode == 2 and "no backup file" in result.stderr
    assert asides(stopped.database) == []


@pytest.mark.parametrize("env, key", [
    ({"SHOPNODE_BACKUP_EVERY_HOURS": "-1"}, "backup.every_hours"),
    ({"SHOPNODE_BACKUP_EVERY_HOURS": "often"}, "SHOPNODE_BACKUP_EVERY_HOURS"),
    ({"SHOPNODE_BACKUP_KEEP": "0"}, "backup.keep"),
])  # fmt: skip
def test_bad_backup_settings_are_refused_naming_the_key(shopnode_main, tmp_path, env, key):
    result = shopnode_main("serve", env={"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "d"), **env})
    assert result.returncode == 2 and key in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_backup_settings_from_the_file_take_fractions(shopnode_main, tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text("[backup]\nevery_hours = true\n")
    refused = shopnode_main("--config", str(config), "serve", env={})
    assert refused.returncode == 2 and "backup.every_hours" in refused.stderr
    from node.config import load_config

    config.write_text(f'[backup]\nevery_hours = 0.5\nkeep = 3\ndir = "{tmp_path / "b"}"\n')
    loaded = load_config(config, environ={})
    assert (loaded.backup.every_hours, loaded.backup.keep) == (0.5, 3)
    assert loaded.backup_dir == tmp_path / "b"
    config.write_text("[backup]\nevery_hours = 6\n")
    assert load_config(config, environ={}).backup_dir == Path("./shopnode-data/backups")
