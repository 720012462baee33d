"""The shopnode command line, run as a user runs it: real processes, real files."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import call
from tests.processes import shopnode, start_node


def test_first_start_prints_an_owner_token_once_and_data_survives_restart(node, tmp_path):
    assert node.token and node.token.startswith("sn_")
    status, created = call(node, "POST", "/api/v1/customers", {"name": "Asha"})
    assert status == 201
    assert node.stop() == 0
    again = start_node(node.env, node.log)
    try:
        assert again.token is None  # shown once only
        again.token = node.token
        status, got = call(again, "GET", f"/api/v1/customers/{created['id']}")
        assert status == 200 and got["name"] == "Asha"
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_node_cleanly(node, sig):
    assert call(node, "GET", "/api/v1/customers")[0] == 200
    assert node.stop(sig) == 0
    log = node.log.read_text()
    assert "stopped" in log and "Traceback" not in log


def test_token_commands(node):
    env = node.env
    made = shopnode("token", "create", "--name", "till-1", "--role", "staff", env=env)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert call(node, "GET", "/api/v1/customers", token=secret)[0] == 200
    assert call(node, "DELETE", "/api/v1/customers/01900000-0000-7000-8000-000000000000",
                token=secret)[0] == 403  # fmt: skip
    duplicate = shopnode("token", "create", "--name", "till-1", env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = shopnode("token", "list", env=env)
    assert "till-1" in listed.stdout and "staff" in listed.stdout
    assert secret not in listed.stdout and node.token not in listed.stdout
    assert shopnode("token", "revoke", "till-1", env=env).returncode == 0
    assert call(node, "GET", "/api/v1/customers", token=secret)[0] == 401
    assert "revoked" in shopnode("token", "list", env=env).stdout
    missing = shopnode("token", "revoke", "nobody", env=env)
    assert missing.returncode == 1 and "nobody" in missing.stderr
    bad_role = shopnode("token", "create", "--name", "x", "--role", "admin", env=env)
    assert bad_role.returncode == 2


def test_config_file_and_option_position(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text(f'[node]\nname = "Corner"\ndata_dir = "{tmp_path / "d"}"\n')
    before = shopnode("--config", str(config), "token", "create", "--name", "a", env={})
    after = shopnode("token", "create", "--name", "b", "--config", str(config), env={})
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    assert (tmp_path / "d" / "shop.db").exists()
    via_env = shopnode("token", "list", env={"SHOPNODE_CONFIG": str(config)})
    assert "a " in via_env.stdout and "b " in via_env.stdout


BAD_CONFIGS = [
    ("[api]\nprot = 1\n", {}, "api.prot"),
    ("[shop]\nname = 'x'\n", {}, "shop"),
    ("[api]\nport = 'eighty'\n", {}, "api.port"),
    ("[api]\nport = 70000\n", {}, "api.port"),
    ("[node]\ncurrency = 'XYZ'\n", {}, "node.currency"),
    ("[bot]\nowners = ['me']\n", {}, "bot.owners"),
    ("[api\n", {}, "not valid TOML"),
    ("", {"SHOPNODE_API_PORT": "x"}, "SHOPNODE_API_PORT"),
    ("", {"SHOPNODE_API_PROT": "1"}, "SHOPNODE_API_PROT"),
    ("", {"SHOPNODE_BOT_DIGEST_TIME": "25:00"}, "bot.digest_time"),
]


def serve_with_bad_config(run, tmp_path, toml: str, env: dict[str, str]):
    config = tmp_path / "shop.toml"
    config.write_text(toml)
    return run("--config", str(config), "serve", env={
        "SHOPNODE_NODE_DATA_DIR": str(tmp_path / "d"), **env})  # fmt: skip


def assert_refused_in_one_line(result, key: str, tmp_path) -> None:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("toml, env, key", BAD_CONFIGS)
def test_bad_config_exits_2_with_one_line_naming_the_key(shopnode_main, tmp_path, toml, env, key):
    result = serve_with_bad_config(shopnode_main, tmp_path, toml, env)
    assert_refused_in_one_line(result, key, tmp_path)


@pytest.mark.parametrize("toml, env, key", [BAD_CONFIGS[0], BAD_CONFIGS[7]])
def test_bad_config_stops_a_real_serve_with_exit_2(tmp_path, toml, env, key):
    """The cases above run in this process; one from the file, one from the environment
    take the whole way, as a real `shopnode serve` process."""
    result = serve_with_bad_config(shopnode, tmp_path, toml, env)
    assert_refused_in_one_line(result, key, tmp_path)


def test_missing_config_file_is_exit_2(shopnode_main, tmp_path):
    result = shopnode_main("--config", str(tmp_path / "nope.toml"), "token", "list", env={})
    assert result.returncode == 2 and "nope.toml" in result.stderr


def test_environment_beats_file(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "file"}"\n')
    result = shopnode("--config", str(config), "token", "create", "--name", "x",
                      env={"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "env")})  # fmt: skip
    assert result.returncode == 0
    assert (tmp_path / "env" / "shop.db").exists() and not (tmp_path / "file").exists()


def test_default_start_uses_shopnode_data_in_the_working_directory(tmp_path):
    node = start_node({"SHOPNODE_API_PORT": "0"}, tmp_path / "n.log", cwd=tmp_path)
    try:
        assert node.url.startswith("http://127.0.0.1:")
        assert (tmp_path / "shopnode-data" / "shop.db").exists()
    finally:
        assert node.stop() == 0


def test_backup_while_serving(node, tmp_path):
    status, created = call(node, "POST", "/api/v1/customers", {"name": "Backed Up"})
    assert status == 201
    target = tmp_path / "backup" / "shop-copy.db"
    result = shopnode("backup", str(target), env=node.env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT name FROM customer").fetchall() == [("Backed Up",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_port_in_use_fails_with_exit_1(node, tmp_path):
    port = node.url.rsplit(":", 1)[1]
    result = shopnode("serve", env={"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "other"),
                                    "SHOPNODE_API_PORT": port})  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "address" in result.stderr.lower()


def test_database_from_a_newer_shopnode_is_refused(tmp_path):
    data = Path(tmp_path / "d")
    data.mkdir()
    with sqlite3.connect(data / "shop.db") as conn:
        conn.execute("PRAGMA user_version = 999")
    result = shopnode("token", "list", env={"SHOPNODE_NODE_DATA_DIR": str(data)})
    assert result.returncode == 1 and "newer" in result.stderr
