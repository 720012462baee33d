"""Helpers of the node tests: problem responses, a customer's money as a user sees it,
debits, whole ledgers over a real process, and the CLI run in this process."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from node import cli, hlc
from tests.processes import REPO

CUSTOMERS = "/api/v1/customers"


def ledger_path(customer_id: str) -> str:
    return f"{CUSTOMERS}/{customer_id}/ledger"


async def problem(response: aiohttp.ClientResponse, status: int | None = None) -> dict:
    """Assert an RFC 9457 problem response (with this status, when given): problem+json,
    the usual members, its own status in the body, no traceback. Return its body."""
    text = await response.text()
    if status is not None:
        assert response.status == status, (response.status, text)
    assert response.content_type == "application/problem+json", (response.status, text)
    body = json.loads(text)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == response.status
    assert "Traceback" not in body["detail"]
    return body


def error_fields(body: dict) -> set[str]:
    """The fields a problem's `errors` name."""
    return {e["field"] for e in body.get("errors", [])}


async def ledger(api, customer_id: str, query: str = "") -> list[dict]:
    """A customer's ledger entries (first 100), newest first; `query` adds parameters."""
    return await api.ok("GET", f"{ledger_path(customer_id)}?limit=100{query}")


async def snapshot(api, customer_id: str) -> tuple:
    """Everything a user sees of a customer's money: to compare before and after a request
    that must change nothing (refused, or replayed)."""
    customer = await api.get_customer(customer_id)
    keys = ("loyalty_points", "total_spent", "total_orders", "ledger_balance")
    sales = await api.ok("GET", f"{CUSTOMERS}/{customer_id}/sales?limit=100")
    return (
        tuple(customer[k] for k in keys),
        [p["id"] for p in customer["recent_purchases"]],
        [(e["id"], e["amount"]) for e in await ledger(api, customer_id)],
        [(s["id"], s["refunded_amount"], s["discount_amount"]) for s in sales],
    )


async def debit(api, customer_id: str, amount: int, status: int = 201, **fields: Any) -> dict:
    """A manual debit (the customer owes `amount` more); asserts `status`."""
    body = {"type": "debit", "amount": amount, **fields}
    return await api.ok("POST", ledger_path(customer_id), status, json=body)


# -- a node process over HTTP ------------------------------------------------------------------


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, dict]:
    """One request; its status, JSON body and headers."""
    async with session.request(method, url, **kw) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def all_entries(session: aiohttp.ClientSession, url: str, customer_id: str) -> list[dict]:
    """Every ledger entry of a customer at the node serving `url`, page after page."""
    entries: list[dict] = []
    for page in range(1, 50):
        status, rows, _ = await fetch(
            session, "GET", f"{url}{ledger_path(customer_id)}?limit=100&page={page}"
        )
        assert status == 200, rows
        entries.extend(rows)
        if len(rows) < 100:
            return entries
    raise AssertionError("ledger never ended")


# -- the command line in this process -----------------------------------------------------------


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def shopnode_main(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., CliResult]]:
    """`shopnode ARGS` as node.cli.main in this process, for commands refused before they do
    anything (a bad configuration): no process to start. The environment holds `env` and no
    other SHOPNODE_* setting, the working directory is the repository's (as for
    tests.processes.shopnode); a command that gets past its configuration fails the test
    instead of running. What main() sets for the process (umask, logging, clock drift) is
    put back afterwards."""
    for name in [n for n in os.environ if n.startswith("SHOPNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)
    for name, value in vars(cli).items():
        if name.startswith("run_") and callable(value):
            monkeypatch.setattr(cli, name, _refuse_to_run)
    monkeypatch.setattr(hlc, "MAX_DRIFT_MS", hlc.MAX_DRIFT_MS)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    umask = os.umask(0o077)
    os.umask(umask)

    def run(*args: str, env: dict[str, str]) -> CliResult:
        with monkeypatch.context() as scoped:
            for name, value in env.items():
                scoped.setenv(name, value)
            stdout, stderr = io.StringIO(), io.StringIO()
            try:
                with redirect_stdout(stdout), redirect_stderr(stderr):
                    code = cli.main(list(args))
            except SystemExit as exc:  # argparse refuses a command line with exit 2
                code = exc.code
            finally:
                os.umask(umask)
        return CliResult(code, stdout.getvalue(), stderr.getvalue())

    yield run


def _refuse_to_run(config: Any, args: Any) -> int:
    raise AssertionError("the configuration was accepted")
