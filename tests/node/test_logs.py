"""Logs an operator can search: `[log] format = "json"` from real processes, request ids
that match the responses' X-Request-Id, and the ids a client may offer."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from node.api.access import new_request_id
from node.logs import TEXT_FORMAT, TextFormatter
from tests.conftest import call
from tests.processes import start_central, start_node

REQUEST_FIELDS = {"request_id", "method", "route", "status", "duration_ms"}


def entries(log: Path) -> list[dict]:
    """Every line of a log as the JSON object it must be."""
    lines = log.read_text().splitlines()
    assert lines
    parsed = [json.loads(line) for line in lines]
    for entry in parsed:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["time"].endswith("Z")
    return parsed


def request(url: str, token: str, method: str = "GET", body: dict | None = None,
            request_id: str | None = None) -> tuple[int, str]:  # fmt: skip
    """One request; its status and the X-Request-Id it was answered with."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               **({"X-Request-Id": request_id} if request_id else {})}  # fmt: skip
    data = json.dumps(body).encode() if body is not None else None
    sent = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            return response.status, response.headers["X-Request-Id"]
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["X-Request-Id"]


def test_json_logs_one_object_a_line_with_the_request_id_of_each_answer(node_env, tmp_path):
    env = {**node_env, "SHOPNODE_LOG_FORMAT": "json"}
    node = start_node(env, tmp_path / "node.log")
    try:
        base = node.url + "/api/v1/customers"
        status, created_id = request(base, node.token, "POST",
                                     {"name": "Zelda Quimby", "phone": "+1 555 867 5309"})
        assert status == 201
        cid = call(node, "GET", "/api/v1/customers?search=Zelda")[1][0]["id"]
        answered = {created_id: ("POST", "/api/v1/customers", 201)}
        for path, expected in ((f"/{cid}", 200), ("/not-a-uuid", 400), ("?search=867", 200)):
            status, request_id = request(base + path, node.token)
            assert status == expected
            route = "/api/v1/customers/{id}" if path.startswith("/") else "/api/v1/customers"
            answered[request_id] = ("GET", route, expected)
        status, offered = request(base, node.token, request_id="till-7-0001-abcdef")
        assert (status, offered) == (200, "till-7-0001-abcdef")
        answered[offered] = ("GET", "/api/v1/customers", 200)
        status, refused = request(base, "sn_wrong_token_guess_123")
        answered[refused] = ("GET", "/api/v1/customers", 401)
    finally:
        assert node.stop() == 0

    logged = entries(node.log)
    assert any(e["message"].startswith("listening on http://") for e in logged)
    lines = {e["request_id"]: e for e in logged if e["logger"] == "aiohttp.access"}
    for request_id, (method, route, status) in answered.items():
        line = lines[request_id]
        assert REQUEST_FIELDS <= set(line)
        assert (line["method"], line["route"], line["status"]) == (method, route, status)
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["message"].startswith(f"{method} {route} {status} ")
        assert line["level"] == "info"
    text = "\n".join(json.dumps({k: v for k, v in e.items() if k != "time"}) for e in logged)
    # The node's own request ids are random hex, which may hold "5309" by chance (it did).
    for generated in {e.get("request_id") or "" for e in logged}:
        if re.fullmatch(r"[0-9a-f]{32}", generated):
            text = text.replace(generated, "<request id>")
    for secret in (node.token, "sn_wrong", cid, "Zelda", "Quimby", "5309", "not-a-uuid"):
        assert secret not in text, secret


def test_a_line_logged_while_handling_a_request_carries_its_id(tmp_path: Path) -> None:
    env = {"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{tmp_path / 'central.db'}",
           "SHOPNODE_CENTRAL_PORT": "0", "SHOPNODE_LOG_FORMAT": "json"}  # fmt: skip
    central = start_central(env, tmp_path / "central.log")
    try:
        store = central.add_store("north")
        origin = "01900000-0000-7000-8000-0000000000dd"
        bad = {"origin": origin, "changes": [{"id": "x", "origin": origin, "kind": "nonsense"}]}
        status, request_id = request(central.url + "/sync/v1/push", store["token"], "POST", bad)
        assert status == 422
    finally:
        assert central.stop() == 0
    refused = [e for e in entries(central.log) if e["message"].startswith("refused a push")]
    assert len(refused) == 1
    assert refused[0]["level"] == "warning"
    assert refused[0]["request_id"] == request_id
    assert store["token"] not in central.log.read_text()


@pytest.mark.parametrize("offered", [
    "5558675309",  # a phone number: no letter
    "+1-555-867-5309",
    "sn_" + "a" * 43,  # one of our API tokens (or a store's: st_...): they hold a '_'
    "short1a",
    "a" * 65,
    "a b c d e f g h",
    "id=1 status=200",
])  # fmt: skip
async def test_an_offered_request_id_is_taken_only_if_it_is_a_plain_token(api, offered) -> None:
    response = await api.get("/api/v1/customers", headers={"X-Request-Id": offered})
    assert response.status == 200
    assert response.headers["X-Request-Id"] != offered
    assert len(response.headers["X-Request-Id"]) == 32


@pytest.mark.parametrize("key, value", [("FORMAT", "xml"), ("LEVEL", "verbose")])
def test_log_settings_are_checked(shopnode_main, key: str, value: str) -> None:
    refused = shopnode_main("serve", env={f"SHOPNODE_LOG_{key}": value})
    assert refused.returncode == 2
    assert f"log.{key.lower()}: must be one of" in refused.stderr


def test_a_request_id_of_ours_is_a_random_uuid_in_hex() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_text_line_gives_the_time_as_logging_itself_does() -> None:
    ours, logging_own = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    start = time.time()
    # Within one second and across seconds: the second's text is kept between lines.
    for created in [start + step * 0.137 for step in range(40)] + [86_400.999, 86_401.0]:
        record = logging.makeLogRecord({"msg": "a line", "created": created,
                                        "msecs": (created - int(created)) * 1000})  # fmt: skip
        assert ours.format(record) == logging_own.format(record)
