"""The node runs on the clock it is built with: every stamp, id and calendar day it shows
comes from that one object (no module is patched)."""

from __future__ import annotations

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
