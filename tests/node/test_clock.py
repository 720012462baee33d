"""The node runs on the clock it is built with: every stamp, id and calendar day it shows
comes from that one object (no module is patched)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from node import tokens
from node.api.app import create_app
from node.clock import Clock, current_clock, use_clock
from node.config import load_config
from tests.conftest import Api

NEW_YEAR_NS = int(datetime(2031, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp()) * 10**9


class Stepping(Clock):
    """A fixed instant that moves one second each time it is read; ids from a counter."""

    def __init__(self, start_ns: int) -> None:
        super().__init__()
        self.ns = start_ns
        self.draws = 0

    def time_ns(self) -> int:
        self.ns += 10**9
        return self.ns

    def random_bytes(self, n: int) -> bytes:
        self.draws += 1
        return self.draws.to_bytes(n, "big")


@pytest.fixture
async def api_on_clock(
    aiohttp_client, node_env: dict[str, str]
) -> AsyncIterator[tuple[Api, Stepping]]:
    previous = current_clock()
    clock = Stepping(NEW_YEAR_NS)
    config = load_config(environ={**node_env, "SHOPNODE_NODE_TIMEZONE": "UTC"})
    client = await aiohttp_client(create_app(config, clock=clock))
    try:
        yield Api(client, tokens.create_token("owner"), tokens.create_token("till", "staff")), clock
    finally:
        use_clock(previous)


async def test_stamps_ids_and_receipt_days_come_from_the_clock_the_app_was_built_with(
    api_on_clock: tuple[Api, Stepping],
):
    api, clock = api_on_clock
    customer = await api.customer("Ada")
    assert customer["created_at"].startswith("2031-12-31T23:")
    # UUIDv7: the first 48 bits are the clock's milliseconds.
    id_ms = int(customer["id"].replace("-", "")[:12], 16)
    assert 0 < id_ms - NEW_YEAR_NS // 10**6 < 60_000
    first = await api.sale(customer["id"], 1000)
    assert first["receipt_number"].startswith("REC-20311231-")
    clock.ns += 60 * 10**9  # past midnight: a new day's receipts
    later = await api.sale(customer["id"], 1000)
    assert later["receipt_number"] == "REC-20320101-001"
    assert later["created_at"].startswith("2032-01-01T00:")


class Still(Clock):
    """One instant; the same randomness for every id."""

    def time_ns(self) -> int:
        return NEW_YEAR_NS

    def random_bytes(self, n: int) -> bytes:
        return bytes(range(256)) * (n // 256) + bytes(range(n % 256))[::-1]


def test_ids_made_in_a_batch_are_those_made_one_by_one():
    one_by_one, batch = Still(), Still()
    singles = [one_by_one.uuid7() for _ in range(5000)]
    made = batch.uuid7s(4999) + batch.uuid7s(1)
    assert [i[:19] for i in made] == [i[:19] for i in singles]  # time, version, counter
    assert made == sorted(made) and len(set(made)) == 5000
    for text in (made[0], made[4095], made[4096], made[-1]):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    ms = NEW_YEAR_NS // 1_000_000
    # 4096 ids in one millisecond: the next ones borrow the millisecond after it.
    assert uuid.UUID(made[4095]).int >> 80 == ms and uuid.UUID(made[4096]).int >> 80 == ms + 1
    assert batch.uuid7s(0) == []
