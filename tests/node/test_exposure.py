"""What a running node leaves behind: logs without personal data or tokens, private files,
CSV files a spreadsheet cannot execute. Real processes, real files."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import call
from tests.processes import REPO, shopnode, start_node

PERSONAL = {"name": "Zelda Quimby", "email": "zelda.quimby@example.com", "phone": "+1 555 867 5309",
            "notes": "allergic to walnuts", "address": "12 Hidden Lane"}  # fmt: skip


def raw_http(url: str, request: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are (no client library tidying them up); the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("log_format, level", [("text", "info"), ("json", "debug")])
def test_logs_hold_no_personal_data_tokens_or_query_values(
    node_env: dict[str, str], tmp_path: Path, log_format: str, level: str
) -> None:
    env = {**node_env, "SHOPNODE_LOG_FORMAT": log_format, "SHOPNODE_LOG_LEVEL": level}
    node = start_node(env, tmp_path / "node.log")
    try:
        status, customer = call(node, "POST", "/api/v1/customers", PERSONAL)
        assert status == 201
        cid = customer["id"]
        quoted = urllib.parse.quote
        for query in (PERSONAL["email"], PERSONAL["phone"], "Zelda", "867 5309"):
            assert call(node, "GET", f"/api/v1/customers?search={quoted(query)}")[0] == 200
        payment = {"type": "credit", "amount": 4200, "description": "cash from Zelda Quimby"}
        call(node, "POST", f"/api/v1/customers/{cid}/ledger", payment)
        call(node, "GET", f"/api/v1/customers?access_token={node.token}")
        call(node, "GET", "/api/v1/customers", token="sn_wrong_token_guess_123")
        call(node, "POST", "/api/v1/customers", {"name": "Zelda Quimby", "email": "\udfff"})
        call(node, "GET", f"/api/v1/customers/{cid}")
        raw_http(node.url, b"GET /api/v1/customers?search=zelda.quimby@example.com HTTP/1.1\r\n"
                           b"Host: x\r\nConnection: close\r\n\r\n")  # fmt: skip
        raw_http(node.url, b"ZELDA QUIMBY 867-5309\r\n\r\n")
        # A phone number offered as a request id is not taken (ids need a letter).
        raw_http(node.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"X-Request-Id: 5558675309\r\n\r\n")  # fmt: skip
    finally:
        assert node.stop() == 0
    log = node.log.read_text()
    scanned = without_times_and_ids(log, log_format)
    secrets = [node.token, "sn_wrong_token_guess_123", cid, "Zelda", "Quimby", "zelda",
               "867", "5309", "walnuts", "Hidden Lane", "%40example", "example.com"]  # fmt: skip
    for secret in secrets:
        assert secret not in scanned, f"{secret!r} is in the log"
    assert "GET /api/v1/customers 200" in log
    assert "POST /api/v1/customers/{id}/ledger 201" in log
    assert ("id=" if log_format == "text" else '"request_id": ') in log


def without_times_and_ids(log: str, log_format: str) -> str:
    """The log without its timestamps, durations and request ids: random digits that may
    happen to contain "867" are not personal data."""
    if log_format == "text":
        lines = [line.split(" ", 2)[-1] for line in log.splitlines()]  # past date and time
        scanned = "\n".join(lines)
        scanned = re.sub(r"\b[0-9.]+ms\b", "<duration>", scanned)
        return re.sub(r"\bid=[0-9a-f]{32}\b", "id=<request id>", scanned)
    entries = [json.loads(line) for line in log.splitlines()]
    for entry in entries:
        entry.pop("time")
        entry.pop("duration_ms", None)
        if re.fullmatch(r"[0-9a-f]{32}", entry.get("request_id", "")):
            entry.pop("request_id")
        entry["message"] = re.sub(r"\b[0-9.]+ms\b", "<duration>", entry["message"])
    return "\n".join(json.dumps(entry) for entry in entries)


def test_no_version_banner_and_unreadable_requests_get_problem_json(node) -> None:
    answers = [
        raw_http(node.url, b"GARBAGE\r\n\r\n"),
        raw_http(node.url, b"GET /" + b"a" * 20000 + b"?search=secret HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw_http(node.url, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"),
        raw_http(node.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ]
    for answer in answers:
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        assert "server: shopnode" in head, head
        assert "python" not in head and "aiohttp" not in head
        assert "x-request-id:" in head
    for answer in answers[:3]:
        assert answer[9:10] == b"4", answer[:100]
        assert b"application/problem+json" in answer
        # Not echoed; the random hex of X-Request-Id may hold "aaaa" by chance (it did, in CI).
        told = re.sub(rb"(?im)^x-request-id: [0-9a-f]+\r\n", b"", answer)
        assert b"GARBAGE" not in told and b"secret" not in told and b"aaaa" not in told
    assert node.stop() == 0
    assert "Traceback" not in node.log.read_text()


def test_client_gone_mid_body_is_not_an_error(node) -> None:
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + node.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     b'{"name": "Half')  # fmt: skip
        time.sleep(0.3)
    time.sleep(0.5)
    assert call(node, "GET", "/api/v1/customers")[0] == 200
    assert node.stop() == 0
    log = node.log.read_text()
    assert " ERROR " not in log and "Traceback" not in log, log


def test_gzip_that_is_not_gzip_is_a_400_and_real_gzip_works(node) -> None:
    def post(data: bytes) -> int:
        request = urllib.request.Request(
            node.url + "/api/v1/customers", data=data, method="POST",
            headers={"Authorization": f"Bearer {node.token}", "Content-Encoding": "gzip",
                     "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            assert error.headers["Content-Type"].startswith("application/problem+json")
            error.close()
            return error.code

    assert post(b'{"name": "Plain"}') == 400
    assert post(gzip.compress(b'{"name": "Packed"}')) == 201
    assert node.stop() == 0
    assert "Traceback" not in node.log.read_text()


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_with_customer_data_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SHOPNODE_NODE_DATA_DIR": str(data), "SHOPNODE_API_PORT": "0"}
    lax = {"preexec_fn": lambda: os.umask(0o002)}
    node = start_node(env, tmp_path / "node.log")
    try:
        assert call(node, "POST", "/api/v1/customers", {"name": "Ann", "notes": "=1+2"})[0] == 201
        backup, export, ledger = tmp_path / "b.db", tmp_path / "c.csv", tmp_path / "l.csv"
        assert shopnode("backup", str(backup), env=env, **lax).returncode == 0
        assert shopnode("export", "customers", str(export), env=env, **lax).returncode == 0
        assert shopnode("export", "ledger", str(ledger), env=env, **lax).returncode == 0
        shop_db = data / "shop.db"
        found = [p for p in data.iterdir()]
        assert {p.name for p in found} >= {"shop.db", "shop.db-wal", "shop.db-shm"}
        for path in [*found, backup, export, ledger]:
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(data) == 0o700
        assert shop_db.exists()
    finally:
        node.stop()


def test_open_database_sets_modes_itself_even_in_a_library_caller(tmp_path: Path) -> None:
    script = ("import os, sys; os.umask(0o022); from node import db; "
              "d = db.open_database(sys.argv[1]); db.execute('UPDATE meta SET value = value'); "
              "d.close()")  # fmt: skip
    target = tmp_path / "lib" / "shop.db"
    subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO, check=True)
    assert mode(target) == 0o600 and mode(target.parent) == 0o700


def test_csv_exports_neutralise_formulas_and_keep_numbers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SHOPNODE_NODE_DATA_DIR": str(data), "SHOPNODE_API_PORT": "0"}
    node = start_node(env, tmp_path / "node.log")
    try:
        evil = {"name": "=HYPERLINK(\"http://x\",\"y\")", "notes": "+cmd|' /C calc'!A0",
                "address": "@SUM(1+1)", "tags": ["-2+3", "\tTAB"]}  # fmt: skip
        status, customer = call(node, "POST", "/api/v1/customers", evil)
        assert status == 201, customer
        call(node, "POST", f"/api/v1/customers/{customer['id']}/ledger",
             {"type": "debit", "amount": 1500, "description": "=1+1"})  # fmt: skip
    finally:
        node.stop()
    customers_csv, ledger_csv = tmp_path / "c.csv", tmp_path / "l.csv"
    assert shopnode("export", "customers", str(customers_csv), env=env).returncode == 0
    assert shopnode("export", "ledger", str(ledger_csv), env=env).returncode == 0
    row = read_csv(customers_csv)[0]
    assert row["name"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert row["notes"].startswith("'+") and row["address"].startswith("'@")
    assert row["tags"].startswith("'-2+3")
    assert row["ledger_balance"] == "-1500"  # a number stays a number
    entry = read_csv(ledger_csv)[0]
    assert entry["description"] == "'=1+1" and entry["customer_name"].startswith("'=")
    assert entry["balance_after"] == "-1500" and entry["amount"] == "1500"
    # Importing the export gives back the values as they were typed, not the quotes.
    reimport = tmp_path / "re.csv"
    reimport.write_text("name,notes,address\n" + f'"{row["name"].replace(chr(34), chr(34) * 2)}",'
                        f'"{row["notes"]}","{row["address"]}"\n', encoding="utf-8")  # fmt: skip
    other = {**env, "SHOPNODE_NODE_DATA_DIR": str(tmp_path / "other")}
    done = shopnode("import", "customers", str(reimport), env=other)
    assert done.returncode == 0, done.stderr
    again = tmp_path / "again.csv"
    assert shopnode("export", "customers", str(again), env=other).returncode == 0
    assert read_csv(again)[0]["name"] == row["name"]


def test_csv_import_rejects_bytes_that_are_not_utf8_by_row_and_field(tmp_path: Path) -> None:
    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data")}
    source = tmp_path / "in.csv"
    source.write_bytes(b"name,email,notes\nAnn,ann@example.com,fine\n"
                       b"Bob\xed\xa0\x80,bob@example.com,x\nCy,cy@example.com,bad \xff here\n"
                       b"Di,di@example.com,ok\n")  # fmt: skip
    done = shopnode("import", "customers", str(source), env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "row 3: rejected: name: is not valid Unicode text" in done.stderr
    assert "row 4: rejected: notes: is not valid Unicode text" in done.stderr
    assert "imported 2, already present 0, rejected 2" in done.stdout
    export = tmp_path / "out.csv"
    assert shopnode("export", "customers", str(export), env=env).returncode == 0
    names = [r["name"] for r in read_csv(export)]
    assert names == ["Ann", "Di"]


def test_config_errors_never_echo_secrets(shopnode_main, tmp_path: Path) -> None:
    config = tmp_path / "shopnode.toml"
    config.write_text('[sync]\ntoken = ["st_SECRET_value_1"]\n[bot]\nnode_token = 42\n')
    done = shopnode_main("--config", str(config), "token", "list", env={})
    assert done.returncode == 2
    assert "sync.token" in done.stderr and "st_SECRET" not in done.stderr
    config.write_text('[bot]\nnode_token = 4242424242\n')
    done = shopnode_main("--config", str(config), "token", "list", env={})
    assert done.returncode == 2 and "4242424242" not in done.stderr
