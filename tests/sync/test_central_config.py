"""A central database it cannot use is one plain line naming the key, and exit 2: a wrong
URL, PostgreSQL's driver not installed, a server that is down or refuses the user."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.processes import REPO, shopnode

DOWN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.mark.parametrize(("url", "says"), [
    ("mysql://shop@db.example/central", "must be a sqlite:///PATH or postgresql://"),
    ("sqlite:central.db", "must be a sqlite:///PATH"),
    # Found by attack: an in-memory central handed out tokens it forgot; a query string
    # made files named 'c.db?mode=ro'; a bad port or no database was a traceback.
    ("sqlite:///", "must be a sqlite:///PATH"),
    ("sqlite:///:memory:", "must be a sqlite:///PATH"),
    ("sqlite:///./c.db?mode=ro", "must be a sqlite:///PATH"),
    ("postgresql://postgres@127.0.0.1:abc/test", "not a PostgreSQL URL"),
    ("postgresql://postgres@127.0.0.1:99999/test", "not a PostgreSQL URL"),
    ("postgres://", "the PostgreSQL URL names no database"),
    (DOWN, "cannot use PostgreSQL: connection to server at \"127.0.0.1\", port 1 failed"),
])  # fmt: skip
@pytest.mark.parametrize("command", [("central", "serve"), ("central", "add-store", "--name", "x")])
def test_a_central_database_it_cannot_use_is_one_line_and_exit_2(
    tmp_path: Path, url: str, says: str, command: tuple[str, ...]
):
    done = shopnode(*command, env={"SHOPNODE_CENTRAL_DATABASE": url,
                                   "SHOPNODE_CENTRAL_PORT": "0"}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("shopnode: configuration error: central.database: ")
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_postgresql_without_its_driver_says_what_to_install(tmp_path: Path):
    shim = tmp_path / "shim" / "psycopg2"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named psycopg2')\n")
    env = {"SHOPNODE_CENTRAL_DATABASE": "postgresql://postgres@127.0.0.1:5432/test",
           "SHOPNODE_CENTRAL_PORT": "0",
           "PYTHONPATH": os.pathsep.join([str(shim.parent), str(REPO)])}
    done = shopnode("central", "serve", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("shopnode: configuration error: central.database: PostgreSQL needs "
                           "its driver: pip install 'shopnode[postgres]' (in a checkout: "
                           "pip install '.[postgres]')\n")


def test_a_directory_or_a_path_that_cannot_exist_is_named(tmp_path: Path):
    (tmp_path / "adir").mkdir()
    for url, says in (("sqlite:///adir", "cannot use adir: Is a directory"),
                      ("sqlite:////proc/nope/c.db", "cannot use /proc/nope/c.db")):  # fmt: skip
        done = shopnode("central", "add-store", "--name", "x",
                        env={"SHOPNODE_CENTRAL_DATABASE": url}, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("shopnode: configuration error: central.database: ")
        assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("schema", ["abc", "", "0", "-1", " 2"])
def test_a_central_whose_schema_version_is_not_one_shopnode_writes_is_refused_untouched(
    tmp_path: Path, schema: str
):
    path = tmp_path / "central.db"
    env = {"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{path}"}
    assert shopnode("central", "add-store", "--name", "a", env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (schema,))
    before = _dump(path)
    done = shopnode("central", "add-store", "--name", "b", env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"central.database: its schema version {schema!r} is not one shopnode writes" \
        in done.stderr and "Traceback" not in done.stderr
    assert _dump(path) == before


def test_a_shops_database_is_not_taken_for_a_central(tmp_path: Path):
    shop = tmp_path / "data"
    assert shopnode("token", "create", "--name", "till",
                    env={"SHOPNODE_NODE_DATA_DIR": str(shop)}, cwd=tmp_path).returncode == 0
    path = shop / "shop.db"
    before = _dump(path)
    done = shopnode("central", "add-store", "--name", "x",
                    env={"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{path}"}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "central.database: this database is not a central's" in done.stderr
    assert _dump(path) == before


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())
