"""A central database it cannot use is one plain line naming the key, and exit 2: a wrong
URL, PostgreSQL's driver not installed, a server that is down or refuses the user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.processes import REPO, shopnode

DOWN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.mark.parametrize(("url", "says"), [
    ("mysql://shop@db.example/central", "must be a sqlite:///PATH or postgresql://"),
    ("sqlite:central.db", "must be a sqlite:///PATH or postgresql://"),
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
