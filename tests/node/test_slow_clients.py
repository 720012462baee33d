"""Slow and idle clients are cut off, and the shop keeps being served (a real node process
with a small open-file limit, as on a small box)."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from node.api.params import BODY_TIMEOUT
from node.api.server import HEADER_TIMEOUT
from tests.conftest import call
from tests.processes import start_node

FILE_LIMIT = 256
SLOW_CLIENTS = 300


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def is_closed(sock: socket.socket) -> bool:
    """True once the server has closed this connection (EOF or reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_idle_and_slow_header_clients_cannot_lock_out_the_shop(tmp_path: Path) -> None:
    env = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_API_PORT": "0"}
    node = start_node(env, tmp_path / "node.log", max_files=FILE_LIMIT)
    slow: list[socket.socket] = []
    try:
        for number in range(SLOW_CLIENTS):
            sock = connect(node.url)
            sock.sendall(b"GET /api/v1/customers HTTP/1.1\r\nHost: x\r\n")  # never finished
            if number % 2:
                sock.sendall(b"X-Slow: 1\r\n")
            slow.append(sock)
        started = time.monotonic()
        for _ in range(10):
            assert call(node, "GET", "/api/v1/customers")[0] == 200
        assert call(node, "POST", "/api/v1/customers", {"name": "Still Served"})[0] == 201
        served_in = time.monotonic() - started
        assert served_in < 5, served_in
        deadline = time.monotonic() + HEADER_TIMEOUT + 10
        while time.monotonic() < deadline and not all(is_closed(s) for s in slow):
            time.sleep(0.5)
        open_left = sum(1 for s in slow if not is_closed(s))
        assert open_left == 0, f"{open_left} slow connections still open"
        assert call(node, "GET", "/api/v1/customers")[0] == 200
    finally:
        for sock in slow:
            sock.close()
        node.stop()
    log = node.log.read_text()
    assert "Too many open files" not in log and "Traceback" not in log


def test_a_body_that_dribbles_is_cut_off_with_408(node) -> None:
    sock = connect(node.url)
    try:
        sock.sendall(b"POST /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + node.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")  # fmt: skip
        started = time.monotonic()
        answer = b""
        # One byte a second: always some progress, never the whole body.
        while time.monotonic() - started < BODY_TIMEOUT + 10:
            ready, _, _ = select.select([sock], [], [], 1.0)
            if ready:
                chunk = sock.recv(4096)
                answer += chunk
                if not chunk or b"\r\n\r\n" in answer:
                    break
            else:
                sock.sendall(b" ")
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"application/problem+json" in answer
    assert BODY_TIMEOUT - 1 <= waited <= BODY_TIMEOUT + 5, waited
    assert call(node, "GET", "/api/v1/customers")[0] == 200

