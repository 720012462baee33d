"""Shared fixtures: a node in this process over real HTTP, or a node as a real process
(started by tests/processes.py, the one launcher of node, central and bot processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node import tokens
from node.api.app import create_app
from node.config import load_config

# Re-exported: tests import these from here as well as from tests.processes.
from tests.processes import REPO, NodeProcess, shopnode, start_node  # noqa: F401


class Api:
    """An HTTP client for one node with owner and staff tokens; `api.post(path, json=...)`."""

    def __init__(self, client: TestClient, owner: str, staff: str) -> None:
        self.client = client
        self.owner = {"Authorization": f"Bearer {owner}"}
        self.staff = {"Authorization": f"Bearer {staff}"}

    def _headers(self, as_staff: bool, headers: dict | None) -> dict:
        return {**(self.staff if as_staff else self.owner), **(headers or {})}

    async def request(
        self, method: str, path: str, *, staff: bool = False, headers: dict | None = None, **kw: Any
    ) -> aiohttp.ClientResponse:
        return await self.client.request(method, path, headers=self._headers(staff, headers), **kw)

    async def get(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Make a request, assert its status, return its JSON body."""
        response = await self.request(method, path, **kw)
        body = await response.json(content_type=None)
        assert response.status == status, (response.status, body)
        return body

    async def customer(self, name: str = "Jane Doe", **fields: Any) -> dict:
        return await self.ok("POST", "/api/v1/customers", 201, json={"name": name, **fields})

    async def sale(self, customer_id: str, total: int, method: str = "cash", **fields: Any) -> dict:
        body = {"customer_id": customer_id, "total": total, "payment_method": method, **fields}
        return await self.ok("POST", "/api/v1/sales", 201, json=body)

    async def pay(self, customer_id: str, amount: int, **fields: Any) -> dict:
        body = {"type": "credit", "amount": amount, **fields}
        return await self.ok("POST", f"/api/v1/customers/{customer_id}/ledger", 201, json=body)

    async def get_customer(self, customer_id: str) -> dict:
        return await self.ok("GET", f"/api/v1/customers/{customer_id}")


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    """Environment that points a node at a fresh data dir and a free port."""
    return {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}


@pytest.fixture
async def api(aiohttp_client, node_env: dict[str, str]) -> AsyncIterator[Api]:
    """A node app on a real SQLite file, served over real HTTP on 127.0.0.1."""
    config = load_config(environ=node_env)
    client = await aiohttp_client(create_app(config))
    yield Api(client, tokens.create_token("owner"), tokens.create_token("till", "staff"))


@pytest.fixture
def node(node_env: dict[str, str], tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `shopnode serve` process on a fresh data dir; stopped after the test."""
    process = start_node(node_env, tmp_path / "node.log")
    yield process
    process.stop(signal.SIGKILL)


def call(node: NodeProcess, method: str, path: str, body: dict | None = None,
         token: str | None = None) -> tuple[int, object]:  # fmt: skip
    request = urllib.request.Request(
        node.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token or node.token}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def pay_while_running(node: NodeProcess, customer_id: str,
                      other: subprocess.Popen) -> list[tuple[int, float, object]]:  # fmt: skip
    """A till paying 1 into the customer's ledger, one payment after another, until `other`
    (an import, a catch-up) ends: each answer's (status, seconds it took, body)."""
    answers: list[tuple[int, float, object]] = []
    while other.poll() is None or not answers:
        started = time.monotonic()
        status, body = call(node, "POST", f"/api/v1/customers/{customer_id}/ledger",
                            {"type": "credit", "amount": 1, "description": "Payment"})  # fmt: skip
        answers.append((status, time.monotonic() - started, body))
    return answers
