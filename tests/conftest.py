"""Shared fixtures: a node in this process over real HTTP, or a node as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node import tokens
from node.api.app import create_app
from node.config import load_config

REPO = Path(__file__).resolve().parent.parent


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


@dataclass
class NodeProcess:
    """A `shopnode serve` child process."""

    proc: subprocess.Popen
    url: str
    token: str | None
    env: dict[str, str]
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def shopnode(*args: str, env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (python -m node is the console script's target)."""
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=kw.pop("cwd", REPO),
        **kw,
    )


def start_node(
    env: dict[str, str], log: Path, cwd: Path | None = None, max_files: int | None = None
) -> NodeProcess:
    """Start `shopnode serve`, wait for its ready line, and read the first-start token.

    `max_files` lowers the child's open-file limit (RLIMIT_NOFILE), as on a small box."""
    stdout_path = log.with_suffix(".out")
    # A restart appends to the same files: read only what this run writes.
    seen = log.stat().st_size if log.exists() else 0
    seen_out = stdout_path.stat().st_size if stdout_path.exists() else 0
    # The child keeps its own copies of these descriptors; ours close at once.
    with open(log, "a") as err, open(stdout_path, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve"],
            env={**os.environ, **env},
            stdout=out,
            stderr=err,
            cwd=cwd or REPO,
            preexec_fn=(lambda: _limit_files(max_files)) if max_files else None,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+)", log.read_text()[seen:])
        if match:
            lines = stdout_path.read_text()[seen_out:].strip().splitlines()
            token = lines[-1] if lines and lines[-1].startswith("sn_") else None
            return NodeProcess(proc, match.group(1), token, env, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"node did not start:\n{log.read_text()}")


def _limit_files(count: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


@pytest.fixture
def node(node_env: dict[str, str], tmp_path: Path) -> Iterator[NodeProcess]:
    """A real `shopnode serve` process on a fresh data dir; stopped after the test."""
    process = start_node(node_env, tmp_path / "node.log")
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


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
