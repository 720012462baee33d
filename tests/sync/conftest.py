"""Fixtures for sync: a central node (SQLite or PostgreSQL) and shop nodes as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node import db, verify
from sync.store import CentralStore
from tests.conftest import call
from tests.processes import (
    Central,
    NodeProcess,
    held,
    run_held,
    shopnode,
    start_central,
    start_node,
)

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(PG_DSN).close()
        return True
    except Exception:
        return False


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; mandatory under CI=true."""
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required under CI=true")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running")
    import psycopg2

    schema = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_URL}?options=-c%20search_path%3D{schema}"
    conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def central_database(request, tmp_path: Path) -> str:
    """Each sync suite runs against both central storage engines."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def central(central_database: str, tmp_path: Path) -> Iterator[Central]:
    env = {"SHOPNODE_CENTRAL_DATABASE": central_database, "SHOPNODE_CENTRAL_PORT": "0"}
    process = start_central(env, tmp_path / "central.log")
    yield process
    process.stop()


def register_store(central: Central, name: str) -> dict[str, str]:
    """`central add-store`, done in this process: what the command does, without a
    subprocess (~0.5 s each; tests/sync/test_central_config.py runs the command itself)."""
    store = CentralStore(central.env["SHOPNODE_CENTRAL_DATABASE"])
    try:
        return store.add_store(name)
    finally:
        store.close()


class Shops:
    """Starts shop nodes registered at one central node; stops them all at the end."""

    def __init__(self, central: Central, tmp_path: Path) -> None:
        self.central = central
        self.tmp_path = tmp_path
        self.nodes: list[NodeProcess] = []

    def env_for(self, name: str, central_url: str | None = None, interval: int = 3600,
                register: Callable[[str], dict[str, str]] | None = None) -> dict:  # fmt: skip
        """A new shop's environment; its store registered at central as `central add-store`
        does (register_store), or with `register` when given."""
        store = (register or (lambda store: register_store(self.central, store)))(name)
        return {
            "SHOPNODE_NODE_NAME": name,
            "SHOPNODE_NODE_DATA_DIR": str(self.tmp_path / name),
            "SHOPNODE_API_PORT": "0",
            "SHOPNODE_SYNC_CENTRAL_URL": central_url or self.central.url,
            "SHOPNODE_SYNC_TOKEN": store["token"],
            # Long interval: tests drive rounds with `shopnode sync`, after the start-up one.
            "SHOPNODE_SYNC_INTERVAL_SECONDS": str(interval),
        }

    def start(self, name: str, **kw) -> NodeProcess:
        env = self.env_for(name, **kw)
        node = start_node(env, self.tmp_path / f"{name}.log")
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)


@pytest.fixture
def shops(central: Central, tmp_path: Path) -> Iterator[Shops]:
    """Shop nodes for one test; at the end, every shop's books must verify (`shopnode
    verify`'s checks: totals equal their facts, tombstoned customers hold no data)."""
    registry = Shops(central, tmp_path)
    yield registry
    registry.stop_all()
    found = []
    for data_dir in sorted({node.env["SHOPNODE_NODE_DATA_DIR"] for node in registry.nodes}):
        found += [f"{data_dir}: {line}" for line in verify_database(Path(data_dir) / "shop.db")]
    assert not found, "\n".join(found)


def verify_database(path: Path) -> list[str]:
    """node.verify's differences for one shop database (in this process: fast)."""
    if not path.exists():
        return []
    database = db.open_database(path, migrate_schema=False)
    try:
        return verify.differences()
    finally:
        database.close()


def sync(node: NodeProcess) -> subprocess.CompletedProcess:
    """`shopnode sync` for this node, as an operator runs it."""
    return shopnode("sync", env=node.env)


def get(node: NodeProcess, path: str):
    """GET that must answer 200; its JSON body."""
    status, body = call(node, "GET", path)
    assert status == 200, body
    return body


def post(node: NodeProcess, path: str, body: dict, expect: int = 201):
    status, answer = call(node, "POST", path, body)
    assert status == expect, answer
    return answer


def synced(*nodes: NodeProcess) -> None:
    """A successful `shopnode sync` round at each node, in order. All the runs are started
    at once (tests.processes.held), each told to go when the one before has ended: the
    rounds run one after another, as before, without waiting for each interpreter's start."""
    runs = [held("sync", env=node.env) for node in nodes]
    try:
        for run in runs:
            result = run_held(run)
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.startswith("sync ok"), result.stdout
    finally:
        for run in runs:
            if run.returncode is None:  # never told to go: a round before it failed
                run.kill()
                run.communicate()
