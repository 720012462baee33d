"""sync/protocol.py's compiled validators accept exactly what the rules accept, and central
checks large pushes in its checker processes with the same answers as inline."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from node import hlc
from node.changes import encode_body
from node.clock import now_iso, uuid7
from sync import protocol as P
from sync.central import CHECKERS, create_central_app
from sync.checkers import POOLED_CHECK_BYTES
from sync.protocol import PUSH_PATH, STATUS_PATH, ProtocolError, check_change
from sync.store import CentralStore

ORIGIN = uuid7()
CUSTOMER = uuid7()
NOW = now_iso()


def change(seq: int, kind: str, entity_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": uuid7(), "origin": ORIGIN, "origin_seq": seq,
            "hlc": hlc.encode(1_750_000_000_000, seq, ORIGIN), "kind": kind,
            "entity_id": entity_id, "body": encode_body(body), "recorded_at": NOW}  # fmt: skip


def entry(kind: str = "credit", **fields: Any) -> dict[str, Any]:
    return {"id": uuid7(), "customer_id": CUSTOMER, "type": kind, "amount": 500,
            "description": "Payment received", "reference_id": None, "reverses_id": None,
            "created_at": NOW, **fields}  # fmt: skip


def samples() -> list[dict[str, Any]]:
    """A good change of every kind, with every optional table present somewhere."""
    sale, refund, discount = uuid7(), uuid7(), uuid7()
    earn = {"id": uuid7(), "customer_id": CUSTOMER, "kind": "earn", "points": 12,
            "sale_id": sale, "description": "Earned on REC-1", "created_at": NOW}  # fmt: skip
    credit, debit = entry(), entry("debit", reference_id="REC-1")
    customer = {"id": CUSTOMER, "name": "Priya Patel", "email": "p@example.com",
                "phone": "+1 555 100 2000", "address": None, "notes": "Zoë's friend",
                "tags": json.dumps(["regular", "vip"]), "credit_limit": 5000,
                "created_at": NOW}  # fmt: skip
    return [
        change(1, "customer.created", CUSTOMER, {"customer": [customer]}),
        change(2, "sale.recorded", sale, {
            "sale": [{"id": sale, "origin": ORIGIN, "customer_id": CUSTOMER,
                      "receipt_number": "REC-1", "total": 1200, "discount_amount": 0,
                      "payment_method": "account", "points_earned": 12, "points_redeemed": 0,
                      "created_at": NOW}],
            "loyalty_event": [earn], "ledger_entry": [debit]}),
        change(3, "sale.refunded", refund, {
            "refund": [{"id": refund, "sale_id": sale, "amount": 200, "points_reversed": 2,
                        "points_shortfall": 0, "points_restored": 0, "created_at": NOW}],
            "loyalty_event": [{**earn, "id": uuid7(), "kind": "refund", "points": -2}]}),
        change(4, "loyalty.redeemed", CUSTOMER, {
            "loyalty_event": [{**earn, "id": uuid7(), "kind": "redeem", "points": -5}],
            "sale_discount": [{"id": discount, "sale_id": sale, "discount_amount": 50,
                               "points_redeemed": 5, "points_not_earned": 0,
                               "created_at": NOW}]}),
        change(5, "ledger.credit", credit["id"], {"ledger_entry": [credit]}),
        change(6, "ledger.debit", debit["id"], {"ledger_entry": [debit]}),
        change(7, "ledger.reversal", CUSTOMER, {"ledger_entry": [
            entry("debit", id=CUSTOMER, reverses_id=credit["id"])]}),
        change(8, "customer.updated", CUSTOMER, {"customer_id": CUSTOMER,
                                                 "fields": {"name": "P. Patel"}}),
        change(9, "customer.deleted", CUSTOMER, {"customer_id": CUSTOMER, "created_at": NOW}),
    ]  # fmt: skip


JUNK: list[Any] = [
    None, True, False, 0, 1, -1, 7, 2**63, 1.5, "", "x", "X" * 600, "a\x00b", "\ud800",
    "Zoë", "2025-02-30T10:00:00Z", "2025-06-01T10:00:00.000Z", "2025-06-01 10:00:00Z",
    uuid7(), uuid7().upper(), f"{uuid7()} ", "credit", "earn", "cash", "[]", '["a"]', '[""]',
    "[1]", '["' + "t" * 51 + '"]', "[" * 3000, '["\\u0000"]', '["\\ud800"]', [], {}, [{}],
    {"a": 1}, "001750000000000-000001-" + ORIGIN,
]  # fmt: skip


def mutations(rng: random.Random, good: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Changes like `good` with one thing wrong, or right by chance."""
    out = []
    for _ in range(count):
        bad = dict(good)
        body = json.loads(good["body"])
        how = rng.choice(("field", "drop", "extra", "body_field", "body_drop", "body_extra",
                          "table", "rows", "body", "kind"))  # fmt: skip
        tables = [t for t, rows in body.items() if isinstance(rows, list) and rows]
        if how == "field":
            bad[rng.choice(P.CHANGE_FIELDS)] = rng.choice(JUNK)
        elif how == "drop":
            del bad[rng.choice(P.CHANGE_FIELDS)]
        elif how == "extra":
            bad[rng.choice(("cursor", "ledger_balance", "x"))] = rng.choice(JUNK)
        elif how == "kind":
            bad["kind"] = rng.choice(P.KINDS)
        elif how == "body":
            bad["body"] = rng.choice(["{", "[]", "null", "{}", "1", json.dumps(rng.choice(JUNK))])
        elif how in ("body_field", "body_drop", "body_extra") and tables:
            row = rng.choice(body[rng.choice(tables)])
            name = rng.choice(sorted(row))
            if how == "body_field":
                row[name] = rng.choice(JUNK)
            elif how == "body_drop":
                del row[name]
            else:
                row[rng.choice(("balance", "x"))] = rng.choice(JUNK)
            bad["body"] = encode_body(body)
        elif how in ("body_field", "body_drop", "body_extra"):  # a profile change
            if "fields" in body and how == "body_field":
                body["fields"][rng.choice(P.PROFILE_COLUMNS)] = rng.choice(JUNK)
            elif how == "body_drop":
                body.pop(rng.choice(sorted(body)))
            else:
                body[rng.choice(("fields", "x", "created_at"))] = rng.choice(JUNK)
            bad["body"] = encode_body(body)
        elif how == "table":
            body[rng.choice([*P.ROWS, "api_token"])] = rng.choice(JUNK)
            bad["body"] = encode_body(body)
        elif how == "rows" and tables:
            rows = body[rng.choice(tables)]
            rows.append(dict(rows[0]) if rng.random() < 0.5 else rng.choice(JUNK))
            bad["body"] = encode_body(body)
        out.append(bad)
    return out


def accepted(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except (ProtocolError, ValueError):
        return False
    return True


def test_the_samples_are_good():
    for good in samples():
        assert check_change(good) == good
        assert P._VALID_CHANGE(good), good["kind"]


def test_compiled_validators_accept_exactly_what_the_rules_accept(monkeypatch):
    """The compiled checks (the fast path) against the rules one by one (which name what is
    wrong): the same verdict on thousands of changes with something wrong, or not."""
    monkeypatch.setattr(P, "_check_links", lambda *args: None)  # links are checked once
    rng = random.Random(12)
    verdicts = {True: 0, False: 0}
    for good in samples():
        for bad in mutations(rng, good, 400):
            fast = P._VALID_CHANGE(bad)
            assert fast == accepted(P._explain_change, bad), bad
            verdicts[fast] += 1
            if not fast:
                continue
            try:
                body = orjson.loads(bad["body"])
            except ValueError:
                continue
            valid = P._VALID_BODY.get(bad["kind"])
            if valid is not None:
                assert valid(body) == accepted(P._explain_body, bad["kind"], bad["entity_id"],
                                               body), bad  # fmt: skip
                verdicts[valid(body)] += 1
    assert verdicts[True] > 500 and verdicts[False] > 1000, verdicts


def test_every_rule_step_is_its_condition():
    """A rule's call (messages) and its condition (inlined) agree on every junk value."""
    rules = {*P._CHANGE_CHECKS.values(), *P.PROFILE.values(),
             *(rule for shape in P.ROWS.values() for rule in shape.values())}  # fmt: skip
    for rule in rules:
        condition = P._compiled([f"def ok(v):\n    return bool({rule.condition})"], "ok")
        for value in JUNK:
            assert condition(value) == accepted(rule, value), (rule.steps, value)


def test_a_bad_change_is_named_as_before():
    good = samples()[1]
    body = json.loads(good["body"])
    body["loyalty_event"][0]["points"] = 0
    with pytest.raises(ProtocolError) as caught:
        check_change({**good, "body": encode_body(body)})
    assert caught.value.field == "body.loyalty_event[0].points"
    assert str(caught.value) == "body.loyalty_event[0].points: must not be 0"
    with pytest.raises(ProtocolError, match="^hlc: must be a clock stamp"):
        check_change({**good, "hlc": "garbage"})
    tags = json.loads(samples()[0]["body"])
    tags["customer"][0]["tags"] = '["ok", "' + "t" * 51 + '"]'
    with pytest.raises(ProtocolError, match=r"tags: must be text of 1 to 50 characters$"):
        check_change({**samples()[0], "body": encode_body(tags)})


# -- central's checker processes ---------------------------------------------------------------


def credits(count: int, start: int = 1) -> list[dict[str, Any]]:
    out = []
    for seq in range(start, start + count):
        row = entry()
        out.append(change(seq, "ledger.credit", row["id"], {"ledger_entry": [row]}))
    return out


@pytest.fixture
async def central(aiohttp_client, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'central.db'}"
    store = CentralStore(url)
    token = store.add_store("shop")["token"]
    store.close()
    client = await aiohttp_client(create_central_app(url))
    client.headers = {"Authorization": f"Bearer {token}"}  # type: ignore[misc]
    return client


async def push(client: Any, changes: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    raw = orjson.dumps({"origin": ORIGIN, "changes": changes})
    response = await client.post(PUSH_PATH, data=raw, headers=client.headers)
    return response.status, await response.json(content_type=None)


async def held(client: Any) -> int:
    response = await client.get(STATUS_PATH, headers=client.headers)
    return (await response.json())["changes"]


async def test_a_large_push_is_checked_in_a_checker_process(central):
    batch = credits(400)
    assert len(orjson.dumps({"origin": ORIGIN, "changes": batch})) >= POOLED_CHECK_BYTES
    body = json.loads(batch[321]["body"])
    body["ledger_entry"][0]["amount"] = "500"
    bad = [*batch[:321], {**batch[321], "body": encode_body(body)}, *batch[322:]]
    status, answer = await push(central, bad)
    assert status == 422, answer
    assert answer["errors"] == [{"field": "changes[321].body.ledger_entry[0].amount",
                                 "message": "body.ledger_entry[0].amount: must be an "
                                            "integer"}]  # fmt: skip
    assert answer["change_id"] == batch[321]["id"] and "change 321" in answer["detail"]
    assert await held(central) == 0
    status, answer = await push(central, [{**batch[0], "origin": uuid7()}, *batch[1:]])
    assert status == 403, answer  # a change of another origin: the store's rule, as inline
    status, answer = await push(central, batch)
    assert (status, answer["acked_seq"]) == (200, 400), answer
    assert await held(central) == 400
    assert multiprocessing.active_children(), "no checker process ran"


async def test_a_malformed_large_push_gets_the_same_400(central):
    raw = b'{"origin": "' + ORIGIN.encode() + b'", "changes": [' + b" " * POOLED_CHECK_BYTES
    response = await central.post(PUSH_PATH, data=raw, headers=central.headers)
    answer = await response.json(content_type=None)
    assert response.status == 400 and answer["detail"].startswith("malformed push"), answer
    assert set(answer) == {"type", "title", "status", "detail"}


async def test_a_checker_that_dies_is_replaced(central):
    assert (await push(central, credits(200)))[0] == 200
    for process in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):  # one that ended of itself
            os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    first = central.app[CHECKERS].pool
    status, answer = await push(central, credits(200, start=201))  # checked here instead
    assert (status, answer["acked_seq"]) == (200, 400), answer
    assert central.app[CHECKERS].pool is not first
    status, answer = await push(central, credits(200, start=401))
    assert (status, answer["acked_seq"]) == (200, 600), answer
    assert multiprocessing.active_children(), "no new checker process"
    assert await held(central) == 600
