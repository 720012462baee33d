"""The shop's day is `[node] timezone`'s: receipt numbers, date-only from/to, ageing and the
settings all count local calendar days, while every stored time stays UTC. Each test runs a
node over real HTTP on a clock held at chosen instants around a local midnight or a DST
change, in zones far from UTC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node import tokens
from node.api.app import create_app
from node.clock import Clock, current_clock, use_clock
from node.config import load_config
from tests.conftest import Api
from tests.node.conftest import debit, ledger

RECEIVABLES = "/api/v1/reports/receivables"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Held(Clock):
    """Stands still at the instant it was last moved to."""

    def __init__(self, moment: datetime) -> None:
        super().__init__()
        self.move_to(moment)

    def move_to(self, moment: datetime) -> None:
        self.ns = int(moment.timestamp()) * 10**9

    def time_ns(self) -> int:
        return self.ns


OpenShop = Callable[[str, datetime], Awaitable[tuple[Api, Held]]]


@pytest.fixture
async def open_shop(aiohttp_client, node_env: dict[str, str]) -> AsyncIterator[OpenShop]:
    """A node whose [node] timezone is `zone`, on a clock held at `moment`."""
    previous = current_clock()

    async def start(zone: str, moment: datetime) -> tuple[Api, Held]:
        clock = Held(moment)
        config = load_config(environ={**node_env, "SHOPNODE_NODE_TIMEZONE": zone})
        client = await aiohttp_client(create_app(config, clock=clock))
        owner, staff = tokens.create_token("owner"), tokens.create_token("till", "staff")
        return Api(client, owner, staff), clock

    yield start
    use_clock(previous)


async def entry_ids(api: Api, customer_id: str, query: str) -> list[str]:
    return [e["id"] for e in await ledger(api, customer_id, query)]


async def test_karachi_day_turns_at_local_midnight_not_utc(open_shop: OpenShop):
    api, clock = await open_shop("Asia/Karachi", utc("2031-05-17T18:59:00"))  # 23:59 PKT
    assert (await api.ok("GET", "/api/v1/settings"))["timezone"] == "Asia/Karachi"
    customer = await api.customer("Late Buyer")
    late = await api.sale(customer["id"], 1000, "account")
    clock.move_to(utc("2031-05-17T19:01:00"))  # 00:01 PKT on the 18th; UTC is still the 17th
    early = await api.sale(customer["id"], 2000, "account")

    assert late["receipt_number"] == "REC-20310517-001"
    assert early["receipt_number"] == "REC-20310518-001"
    # What is stored stays UTC.
    assert late["created_at"] == "2031-05-17T18:59:00.000Z"
    assert early["created_at"] == "2031-05-17T19:01:00.000Z"

    entries = {e["amount"]: e["id"] for e in await ledger(api, customer["id"])}
    cid = customer["id"]
    assert await entry_ids(api, cid, "&from=2031-05-17&to=2031-05-17") == [entries[1000]]
    assert await entry_ids(api, cid, "&from=2031-05-18&to=2031-05-18") == [entries[2000]]
    assert await entry_ids(api, cid, "&to=2031-05-17") == [entries[1000]]
    assert await entry_ids(api, cid, "&from=2031-05-16&to=2031-05-18") == [
        entries[2000], entries[1000]]  # fmt: skip

    report = await api.ok("GET", "/api/v1/reports/loyalty?from=2031-05-18&to=2031-05-18")
    assert (report["from"], report["to"]) == ("2031-05-17T19:00:00.000Z",
                                              "2031-05-18T19:00:00.000Z")  # fmt: skip
    assert report["points_earned"] == early["points_earned"] == 20

    # The next local day's numbering starts again; the day before's goes on where it was.
    clock.move_to(utc("2031-05-18T18:58:00"))  # 23:58 PKT on the 18th
    assert (await api.sale(customer["id"], 500))["receipt_number"] == "REC-20310518-002"


async def test_new_york_days_across_dst_changes_are_23_and_25_hours(open_shop: OpenShop):
    # 9 March 2031: clocks jump 02:00 EST -> 03:00 EDT, so the day is 05:00Z to 04:00Z.
    api, clock = await open_shop("America/New_York", utc("2031-03-10T03:30:00"))  # 23:30 EDT
    customer = await api.customer("Night Owl")
    cid = customer["id"]
    sunday_night = await api.pay(cid, 100)
    assert (await api.sale(cid, 1000))["receipt_number"] == "REC-20310309-001"
    clock.move_to(utc("2031-03-10T04:30:00"))  # 00:30 EDT on Monday the 10th
    monday_morning = await api.pay(cid, 200)
    assert (await api.sale(cid, 1000))["receipt_number"] == "REC-20310310-001"

    assert await entry_ids(api, cid, "&from=2031-03-09&to=2031-03-09") == [sunday_night["id"]]
    assert await entry_ids(api, cid, "&from=2031-03-10") == [monday_morning["id"]]

    # 2 November 2031: clocks fall back 02:00 EDT -> 01:00 EST; the day is 04:00Z to 05:00Z.
    clock.move_to(utc("2031-11-02T04:30:00"))  # 00:30 EDT on the 2nd
    just_after_midnight = await api.pay(cid, 300)
    clock.move_to(utc("2031-11-03T04:30:00"))  # 23:30 EST, still the 2nd: 24h later
    just_before_midnight = await api.pay(cid, 400)
    assert (await api.sale(cid, 1000))["receipt_number"] == "REC-20311102-001"
    clock.move_to(utc("2031-11-03T05:30:00"))  # 00:30 EST on the 3rd
    next_day = await api.pay(cid, 500)
    assert (await api.sale(cid, 1000))["receipt_number"] == "REC-20311103-001"

    assert await entry_ids(api, cid, "&from=2031-11-02&to=2031-11-02") == [
        just_before_midnight["id"], just_after_midnight["id"]]  # fmt: skip
    assert await entry_ids(api, cid, "&from=2031-11-03&to=2031-11-03") == [next_day["id"]]


async def test_kiritimati_ageing_counts_shop_days(open_shop: OpenShop):
    # UTC+14: 23:50 on 1 June in the shop is 09:50Z, still 1 June in UTC at 10:10Z.
    api, clock = await open_shop("Pacific/Kiritimati", utc("2031-06-01T09:50:00"))
    customer = await api.customer("Credit Buyer")
    owed = await debit(api, customer["id"], 5000)
    dues = await api.ok("GET", RECEIVABLES)
    assert dues["customers"][0]["age_days"] == 0

    clock.move_to(utc("2031-06-01T10:10:00"))  # twenty minutes later: 2 June in the shop
    [row] = (await api.ok("GET", RECEIVABLES))["customers"]
    assert row["age_days"] == 1
    assert row["oldest_unpaid_at"] == owed["created_at"] == "2031-06-01T09:50:00.000Z"

    # 30 days and 20 minutes later it is the 31st shop day since: past the first bucket.
    clock.move_to(utc("2031-07-01T10:10:00"))
    dues = await api.ok("GET", RECEIVABLES)
    assert dues["customers"][0]["age_days"] == 31
    assert dues["buckets"] == {"0-30": 0, "31-60": 5000, "61-90": 0, "90+": 0}

    # The calendar's ends are still open bounds in a zone this far ahead of UTC.
    assert await entry_ids(api, customer["id"], "&from=0001-01-01&to=9999-12-31") == [owed["id"]]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "asia/karachi", "../etc", "UTC+5"])
def test_unknown_timezone_is_a_config_error_naming_the_key(shopnode_main, zone: str):
    result = shopnode_main("serve", env={"SHOPNODE_NODE_TIMEZONE": zone})
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("shopnode: configuration error: node.timezone: unknown time zone")
    assert repr(zone) in line
    assert "Traceback" not in result.stderr


def test_timezone_in_the_file_must_be_text(shopnode_main, tmp_path: Path):
    config = tmp_path / "shopnode.toml"
    config.write_text("[node]\ntimezone = 5\n")
    result = shopnode_main("serve", "--config", str(config), env={})
    assert result.returncode == 2
    assert "node.timezone: must be a string" in result.stderr
