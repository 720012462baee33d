"""CSV import and export through the CLI, as an operator runs them."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from node import changes, clock, csvio, db, hlc
from tests.conftest import call
from tests.processes import REPO, child_env, shopnode, spawn, stop

HEADER = "name,email,phone,tags\n"


def people(path: Path, count: int, start: int = 0) -> Path:
    """A CSV of `count` distinct customers (and a header)."""
    rows = (f"Customer {n:06d},c{n}@example.com,+1 555 {n:07d},regular\n"
            for n in range(start, start + count))  # fmt: skip
    path.write_text(HEADER + "".join(rows))
    return path


def read_db(data_dir: Path, sql: str) -> list[tuple]:
    """A query on the shop's database file, read-only, as another process would."""
    with sqlite3.connect(f"file:{data_dir / 'shop.db'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql).fetchall()


def books(data_dir: Path) -> dict:
    """What a sync ships and a re-run checks: customers, their created changes (gap-free
    sequence), import fingerprints, each customer once."""
    seqs = [s for (s,) in read_db(data_dir, "SELECT origin_seq FROM change_log ORDER BY 1")]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free, as sync requires
    return {
        "customers": read_db(data_dir, "SELECT COUNT(*), COUNT(DISTINCT name) FROM customer")[0],
        "created": read_db(data_dir, "SELECT COUNT(*), COUNT(DISTINCT entity_id) FROM change_log "
                                     "WHERE kind = 'customer.created' AND entity_id IN "
                                     "(SELECT id FROM customer)")[0],
        "marks": read_db(data_dir, "SELECT COUNT(*) FROM import_mark WHERE customer_id IN "
                                   "(SELECT id FROM customer)")[0][0],
    }  # fmt: skip


def test_import_reports_bad_rows_and_never_imports_twice(node, tmp_path):
    source = tmp_path / "customers.csv"
    source.write_text(
        "name,email,phone,tags,credit_limit\n"
        "Asha Rao,asha@example.com,+91 98200 11111,vip;wholesale,50000\n"
        ",nobody@example.com,,,\n"
        "Ravi,not-an-email,,,\n"
        "Ravi,,,,\n"
        "Ravi,,,,\n"
        "Big Limit,,,,lots\n"
    )
    first = shopnode("import", "customers", str(source), env=node.env)
    assert first.returncode == 1  # some rows were rejected
    assert "imported 3, already present 0, rejected 3" in first.stdout
    assert "row 3: rejected" in first.stderr and "row 4: rejected" in first.stderr
    assert "row 7: rejected" in first.stderr
    status, rows = call(node, "GET", "/api/v1/customers?sort=name&limit=100")
    assert [r["name"] for r in rows] == ["Asha Rao", "Ravi", "Ravi"]  # two distinct Ravis
    asha = rows[0]
    assert asha["tags"] == ["vip", "wholesale"] and asha["credit_limit"] == 50000
    assert asha["phone"] == "+919820011111"
    again = shopnode("import", "customers", str(source), env=node.env)
    assert "imported 0, already present 3, rejected 3" in again.stdout
    assert len(call(node, "GET", "/api/v1/customers")[1]) == 3


def test_import_refuses_unknown_columns(node, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("name,emial\nA,a@example.com\n")
    result = shopnode("import", "customers", str(source), env=node.env)
    assert result.returncode == 1 and "emial" in result.stderr
    assert call(node, "GET", "/api/v1/customers")[1] == []


def test_export_customers_and_ledger(node, tmp_path):
    _, jane = call(node, "POST", "/api/v1/customers", {"name": "Jane", "tags": ["a", "b"]})
    call(node, "POST", "/api/v1/sales", {"customer_id": jane["id"], "total": 15000,
                                         "payment_method": "account"})  # fmt: skip
    call(node, "POST", f"/api/v1/customers/{jane['id']}/ledger",
         {"type": "credit", "amount": 10000})  # fmt: skip
    people, ledger = tmp_path / "people.csv", tmp_path / "ledger.csv"
    assert shopnode("export", "customers", str(people), env=node.env).returncode == 0
    assert shopnode("export", "ledger", str(ledger), env=node.env).returncode == 0
    with open(people) as handle:
        exported = list(csv.DictReader(handle))
    assert [(r["name"], r["tags"], r["ledger_balance"]) for r in exported] == [
        ("Jane", "a;b", "-5000")]  # fmt: skip
    with open(ledger) as handle:
        entries = list(csv.DictReader(handle))
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("debit", "15000", "-15000"), ("credit", "10000", "-5000")]  # fmt: skip


def test_imported_customer_is_logged_as_one_created_through_the_api(node, tmp_path):
    source = tmp_path / "one.csv"
    source.write_text(HEADER + "Asha Rao,asha@example.com,+91 98200 11111,vip\n")
    assert shopnode("import", "customers", str(source), env=node.env).returncode == 0
    status, made = call(node, "POST", "/api/v1/customers", {
        "name": "Asha Rao", "email": "asha@example.com", "phone": "+91 98200 11111",
        "tags": ["vip"]})  # fmt: skip
    assert status == 201
    data_dir = Path(node.env["SHOPNODE_NODE_DATA_DIR"])
    logged = read_db(data_dir, "SELECT kind, entity_id, body, hlc FROM change_log "
                               "ORDER BY origin_seq")  # fmt: skip
    (kind_a, id_a, body_a, hlc_a), (kind_b, id_b, body_b, hlc_b) = logged
    assert kind_a == kind_b == "customer.created" and id_b == made["id"]
    imported, created = json.loads(body_a)["customer"], json.loads(body_b)["customer"]
    assert imported[0]["id"] == id_a and hlc.decode(hlc_a) < hlc.decode(hlc_b)
    strip = [{k: v for k, v in row.items() if k not in ("id", "created_at")}
             for row in (*imported, *created)]  # fmt: skip
    assert strip[0] == strip[1]


def test_import_killed_midway_keeps_whole_batches_and_a_rerun_completes_it(node_env, tmp_path):
    count = 10_000
    source = people(tmp_path / "many.csv", count)
    data_dir = Path(node_env["SHOPNODE_NODE_DATA_DIR"])
    importing = spawn("import", "customers", str(source), env=node_env, log=tmp_path / "kill.log")
    try:
        deadline = time.monotonic() + 60
        while importing.poll() is None and time.monotonic() < deadline:
            if (data_dir / "shop.db").exists() and read_db(
                    data_dir, "SELECT 1 FROM sqlite_master WHERE name = 'import_mark'") and \
                    read_db(data_dir, "SELECT COUNT(*) FROM import_mark")[0][0]:  # fmt: skip
                break
            time.sleep(0.005)
    finally:
        assert stop(importing, signal.SIGKILL) == -signal.SIGKILL  # killed, not finished
    kept = books(data_dir)
    done = kept["marks"]
    assert 0 < done < count
    assert kept == {"customers": (done, done), "created": (done, done), "marks": done}

    again = shopnode("import", "customers", str(source), env=node_env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"imported {count - done}, already present {done}, rejected 0" in again.stdout
    assert books(data_dir) == {"customers": (count, count), "created": (count, count),
                               "marks": count}  # fmt: skip
    assert shopnode("verify", env=node_env).returncode == 0


def test_import_while_the_node_serves_writes(node, tmp_path):
    source = people(tmp_path / "busy.csv", 3000)
    answers: list[int] = []
    importing = spawn("import", "customers", str(source), env=node.env,
                      log=tmp_path / "busy.log", out=tmp_path / "busy.out")  # fmt: skip

    def till() -> None:
        """A till adding customers for as long as the import runs."""
        while importing.poll() is None or len(answers) < 5:
            answers.append(call(node, "POST", "/api/v1/customers", {"name": "Walk-in"})[0])

    writer = threading.Thread(target=till)
    writer.start()
    assert importing.wait(300) == 0, (tmp_path / "busy.log").read_text()
    writer.join()
    assert set(answers) == {201}  # no request waited out the busy timeout
    assert "imported 3000, already present 0, rejected 0" in (tmp_path / "busy.out").read_text()
    names = read_db(Path(node.env["SHOPNODE_NODE_DATA_DIR"]),
                    "SELECT name = 'Walk-in', COUNT(*) FROM customer GROUP BY 1 ORDER BY 1")
    assert names == [(0, 3000), (1, len(answers))]


def test_progress_bar_on_a_terminal_only(node_env, tmp_path):
    source = people(tmp_path / "bar.csv", 2000)
    parent, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "import", "customers", str(source)],
            env=child_env(node_env), cwd=REPO, stdout=subprocess.DEVNULL, stderr=child,
        )  # fmt: skip
        os.close(child)
        shown = b""
        while chunk := _read_pty(parent):
            shown += chunk
        assert proc.wait(120) == 0
    finally:
        os.close(parent)
    assert b"importing [" + b"#" * 30 + b"] 2000/2000 rows" in shown
    piped = shopnode("import", "customers", str(source), env=node_env)
    assert "already present 2000" in piped.stdout and piped.stderr == ""


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # the child closed its end
        return b""


def test_stamps_taken_for_a_batch_are_those_taken_one_by_one(tmp_path):
    database = db.open_database(tmp_path / "shop.db")
    try:
        origin = changes.origin_id()
        ahead = clock.wall_ms() + 60_000  # our last stamp is ahead: counters, then a carry
        db.set_meta("hlc", hlc.encode(ahead, hlc.MAX_COUNTER - 1, origin))
        batch = hlc.ticks(origin, 3)
        db.set_meta("hlc", hlc.encode(ahead, hlc.MAX_COUNTER - 1, origin))
        assert [hlc.tick(origin) for _ in range(3)] == batch
        assert batch == [hlc.encode(ahead, hlc.MAX_COUNTER, origin),
                         hlc.encode(ahead + 1, 0, origin), hlc.encode(ahead + 1, 1, origin)]
        assert db.get_meta("hlc") == batch[-1]
    finally:
        database.close()


def _as_dictreader_reads(path: Path) -> list[tuple]:
    """(row number, fingerprint content, fields or None) of each row as the import read them
    through csv.DictReader before: the reference for the import's own reading."""
    from node.customers import PROFILE_FIELDS
    from node.errors import DomainError
    from node.spreadsheet import unsafe_cell
    from node.validation import parse_body

    read = []
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            cells = {c: (row.get(c) or "").strip() for c in csvio.IMPORT_COLUMNS}
            fields = {}
            for column, cell in cells.items():
                if value := unsafe_cell(cell):
                    fields[column] = (
                        [t for t in (p.strip() for p in value.split(";")) if t]
                        if column == "tags" else
                        int(value) if column == "credit_limit" and value.lstrip("-").isdigit()
                        else value
                    )  # fmt: skip
            try:
                clean = parse_body(fields, PROFILE_FIELDS, ["name"])
            except DomainError:
                clean = None
            read.append((number, "\x1f".join(cells.values()), clean))
    return read


def test_rows_are_read_as_a_csv_dictreader_reads_them(tmp_path):
    source = tmp_path / "odd.csv"
    source.write_bytes(
        b"\xef\xbb\xbfphone,name,tags,name,credit_limit\n"  # a BOM, a repeated column
        b"+1 555 0100, first , a; b ;a,Asha,12\n"
        b"\n"  # blank lines are not rows
        b"+1 555 0101,x,,Ravi\n"  # short: the missing cells are empty
        b"+1 555 0102,x,,Ravi,,extra,cells\n"  # long: the extra cells are not read
        b"+1 555 0102,x,,Ravi,,extra,cells\n"  # the same content again
        b"12,x,,,\n"  # no name (the last 'name' column wins)
        b'"+1 555 0103","x",vip,"Li\nMing",5\n'  # a quoted newline
        b"'=1+2,x,,'@Mo,\xff\n"  # spreadsheet-safe cells; a byte that is not UTF-8
    )
    with open(source, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        rows = [row for chunk in csvio._read(reader, next(reader)) for row in chunk]
    expected = _as_dictreader_reads(source)
    assert [r.number for r in rows] == [n for n, _, _ in expected] == [2, 3, 4, 5, 6, 7, 8]
    counts: dict[str, int] = {}
    for row, (_, content, fields) in zip(rows, expected, strict=True):
        counts[content] = counts.get(content, 0) + 1
        mark = hashlib.sha256(
            f"{content}\x1e{counts[content]}".encode("utf-8", "surrogateescape")
        ).hexdigest()
        assert row.mark == mark
        if fields is None:
            assert row.new is None and row.reason
        else:
            assert row.new is not None and row.reason is None
            made = {**fields, "tags": json.dumps(fields.get("tags", []))}
            assert {k: v for k, v in row.new.fact.items() if v is not None and k in made} == made
    assert [r.new.fact["name"] for r in rows if r.new] == ["Asha", "Ravi", "Ravi", "Ravi",
                                                           "Li\nMing"]  # fmt: skip
    assert [r.number for r in rows if r.new is None] == [6, 8]


def test_search_index_is_exact_after_an_import(tmp_path):
    source = people(tmp_path / "many.csv", 3000)
    database = db.open_database(tmp_path / "shop.db")
    try:
        report = csvio.import_customers(source)
        assert report == {"imported": 3000, "skipped": 0, "rejected": []}
        # FTS5's own check of the index against the customer table, row by row.
        db.execute("INSERT INTO customer_fts(customer_fts, rank) VALUES ('integrity-check', 1)")
        for fragment in ("001", "r 002", "c299", "5550002"):
            matched = db.fetch_all("SELECT rowid FROM customer_fts WHERE customer_fts MATCH ? "
                                   "ORDER BY rowid", (f'"{fragment}"',))  # fmt: skip
            like = db.fetch_all(
                "SELECT rowid FROM customer WHERE name LIKE ?1 OR email LIKE ?1 "
                "OR phone_digits LIKE ?1 ORDER BY rowid", (f"%{fragment}%",))  # fmt: skip
            assert matched == like and matched
    finally:
        database.close()


def test_cells_python_reads_oddly_are_rejected_rows_not_a_stopped_import(tmp_path):
    """A credit limit of '²' or '①' (isdigit() but not int()), of 5,000 digits (past int()'s
    limit), and a cell over csv's own 128 KiB limit each stopped the import with a traceback,
    the good rows before them not imported."""
    source = tmp_path / "odd.csv"
    source.write_text("name,credit_limit,notes\nok1,5,\nsup,\u00b2,\ncirc,\u2460,\n"
                      f"long,{'9' * 5000},\nhuge,1,{'x' * 200_000}\nok2,7,\n")  # fmt: skip
    db.open_database(tmp_path / "shop.db")
    try:
        report = csvio.import_customers(source)
        names = [r["name"] for r in db.fetch_all("SELECT name FROM customer ORDER BY name")]
    finally:
        db.database.close()
    assert names == ["ok1", "ok2"] and report["imported"] == 2
    assert [(r["row"], r["reason"].split(":")[0]) for r in report["rejected"]] == [
        (3, "credit_limit"), (4, "credit_limit"), (5, "credit_limit"), (6, "notes")]
