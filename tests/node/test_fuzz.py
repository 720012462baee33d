"""A short, seeded schemathesis run against a real node: the OpenAPI document says exactly
what the node accepts, and the node answers only as documented.

Every operation of /api/v1/openapi.json, every phase (coverage, fuzzing, stateful), these
checks: no server error; status code, content type and response body as documented;
schema-violating requests rejected (negative data); auth not ignored. The run is the CLI's
(`st run`, as the README's longer run), in a child process, so its JSON report gives the
figures. The README ("Tests and benchmarks") has the longer run's command and result.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from node.api.openapi import DOCUMENT
from sync.protocol import CHANGE_FIELDS, ProtocolError, check_change
from tests.processes import NodeProcess

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
]
SEED = 20250518
# Test cases per operation and phase. The README has the longer run.
MAX_EXAMPLES = 40


def schemathesis_command(url: str, token: str, report: Path, seed: int, examples: int) -> list:
    return [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS),
        "--seed", str(seed), "--max-examples", str(examples),
        # One worker keeps the order of requests, so a seed replays the same run.
        "--workers", "1",
        "--generation-database", "none",
        "--no-color",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip


def documented_operations() -> int:
    """Operations schemathesis tests: all but GET /api/v1/openapi.json, which it leaves out
    as the document it was given (the contract test in test_openapi.py covers that one)."""
    return sum(len(item) for item in DOCUMENT["paths"].values()) - 1


def unsyncable_changes(db_path: Path) -> tuple[set[str], list[str]]:
    """The kinds of change in the node's log, and those changes central would refuse
    (check_change): each would stop the shop's pushes for good, every later change with it."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(f"SELECT {', '.join(CHANGE_FIELDS)} FROM change_log").fetchall()
    finally:
        db.close()
    refused = []
    for row in rows:
        try:
            check_change(dict(zip(CHANGE_FIELDS, row, strict=True)))
        except ProtocolError as exc:
            refused.append(f"{row[4]} {row[0]}: {exc}")
    return {row[4] for row in rows}, refused


def test_seeded_fuzzing_finds_nothing(node: NodeProcess, node_env: dict[str, str],
                                      tmp_path: Path) -> None:  # fmt: skip
    assert node.token
    report_path = tmp_path / "schemathesis.json"
    command = schemathesis_command(node.url, node.token, report_path, SEED, MAX_EXAMPLES)
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())

    operations, cases = report["operations"], report["test_cases"]
    print(
        f"schemathesis {report['schemathesis_version']}, seed {report['seed']}: "
        f"{operations['tested']} operations, {cases['generated']} test cases, "
        f"{cases['with_failures']} with failures, {len(report['errors'])} errors, "
        f"{report['running_time']:.1f} s"
    )
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    assert cases["errored"] == 0, output
    assert run.returncode == 0, output
    assert report["complete"], output
    # Every operation was reached, and not by a handful of requests.
    assert operations["tested"] == operations["selected"] == documented_operations(), output
    assert cases["generated"] >= 50 * documented_operations(), output
    for phase in ("coverage", "fuzzing", "stateful"):
        assert report["phases"][phase]["status"] == "success", (phase, output)

    # The node answered every request itself: none was a 500, and the failed-auth brake
    # (429, which ignored_auth's wrong tokens count towards) never stood in for an answer.
    statuses = re.findall(r"aiohttp\.access: .* (\d{3}) \S+ms id=", node.log.read_text())
    assert len(statuses) >= 0.9 * cases["generated"], (len(statuses), cases["generated"])
    assert "429" not in statuses and not any(s.startswith("5") for s in statuses)

    # Whatever the node took, it logged as changes central takes: the fuzzer's odd text,
    # numbers and Unicode never leave the shop unable to sync.
    kinds, refused = unsyncable_changes(Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db")
    assert refused == []
    # The run made customers, edited, deleted them, sold and refunded (seeded: always so).
    assert {"customer.created", "customer.updated", "customer.deleted", "sale.recorded",
            "sale.refunded"} <= kinds, kinds  # fmt: skip
