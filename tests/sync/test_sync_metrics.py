"""Sync figures in `/metrics`: a shop's queue, rounds and lag, and central's pushes, pulls,
ingest and per-store lag, scraped over HTTP from real processes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import call
from tests.metrics_scrape import Families, scrape, value
from tests.processes import Central, NodeProcess, shopnode, start_central, start_node
from tests.sync.conftest import Shops, post, register_store, synced
from tests.sync.faults import central_changes, raw_push

METRICS_TOKEN = "prom-" + secrets.token_hex(16)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    """Central with /metrics on (SQLite: the figures do not depend on the engine)."""
    env = {"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{tmp_path / 'central' / 'central.db'}",
           "SHOPNODE_CENTRAL_PORT": "0", "SHOPNODE_METRICS_ENABLED": "true",
           "SHOPNODE_METRICS_TOKEN": METRICS_TOKEN}  # fmt: skip
    process = start_central(env, tmp_path / "central.log")
    yield process
    process.stop()


def shop(shops: Shops, name: str) -> tuple[NodeProcess, str]:
    """A shop node with /metrics on, and its store id at central."""
    store = register_store(shops.central, name)
    env = {**shops.env_for(name, register=lambda _: store), "SHOPNODE_METRICS_ENABLED": "true"}
    node = start_node(env, shops.tmp_path / f"{name}.log")
    shops.nodes.append(node)
    return node, store["store_id"]


def scraped(node: NodeProcess) -> Families:
    status, _, families = scrape(node.url, node.token)
    assert status == 200
    return families


def waited(read: Callable[[], Families], until: Callable[[Families], bool]) -> Families:
    """Scrape until `until` holds (a node's start-up round runs in the background)."""
    deadline = time.monotonic() + 30
    while not until(families := read()):
        assert time.monotonic() < deadline, "the figures never got there"
        time.sleep(0.1)
    return families


def test_shop_and_central_figures_after_a_push_and_a_pull(shops: Shops) -> None:
    central = shops.central
    north, north_id = shop(shops, "north")
    rounds_ok = lambda f: value(f, "shopnode_sync_rounds_total", outcome="ok") >= 1  # noqa: E731
    waited(lambda: scraped(north), rounds_ok)  # its start-up round, with nothing to push

    customer = post(north, "/api/v1/customers", {"name": "Ann Lee"})
    post(north, "/api/v1/sales", {"customer_id": customer["id"], "total": 1200,
                                  "payment_method": "cash"})  # fmt: skip
    queued = scraped(north)
    made = value(queued, "shopnode_sync_push_queue_depth")
    assert made >= 2  # the customer, the sale (and its points)
    assert value(queued, "shopnode_sync_oldest_unsent_age_seconds") >= 0
    assert value(queued, "shopnode_sync_pending_changes") == 0
    assert value(queued, "shopnode_sync_quarantined_changes") == 0

    synced(north)  # `shopnode sync` pushes them
    after = scraped(north)
    assert value(after, "shopnode_sync_push_queue_depth") == 0
    assert value(after, "shopnode_sync_oldest_unsent_age_seconds") == 0

    status, text, at_central = scrape(central.url, METRICS_TOKEN)
    assert status == 200
    assert value(at_central, "shopnode_central_changes_ingested_total", store=north_id) == made
    assert value(at_central, "shopnode_central_pushes_total", store=north_id) >= 2
    assert value(at_central, "shopnode_central_pulls_total", store=north_id) >= 2
    assert value(at_central, "shopnode_central_store_pull_lag_changes", store=north_id) == 0
    assert value(at_central, "shopnode_central_store_last_push_age_seconds", store=north_id) >= 0
    assert value(at_central, "shopnode_http_requests_total", route="/sync/v1/push",
                 status="200") >= 2  # fmt: skip

    # A second shop's start-up round reads north's changes: served to it, none ingested.
    south, south_id = shop(shops, "south")
    waited(lambda: scraped(south), rounds_ok)
    at_south = scraped(south)
    assert value(at_south, "shopnode_sync_pull_lag_changes") == 0
    assert value(at_south, "shopnode_sync_last_success_age_seconds") >= 0
    _, text, at_central = scrape(central.url, METRICS_TOKEN)
    assert value(at_central, "shopnode_central_changes_served_total", store=south_id) == made
    assert value(at_central, "shopnode_central_changes_ingested_total", store=south_id) == 0
    assert value(at_central, "shopnode_central_changes_ingested_total", store=north_id) == made

    for secret in ("Ann", north.token, METRICS_TOKEN, north.env["SHOPNODE_SYNC_TOKEN"]):
        assert secret not in text

    # North's answer was lost, so it sends the same batch again: central holds it already.
    store_token = north.env["SHOPNODE_SYNC_TOKEN"]
    batch = [{k: v for k, v in change.items() if k != "cursor"}
             for change in central_changes(central.url, store_token)]  # fmt: skip
    status, answer = raw_push(central.url, store_token,
                              {"origin": batch[0]["origin"], "changes": batch})  # fmt: skip
    assert status == 200 and answer["conflicts"] == [] and "stored" not in answer
    again = scrape(central.url, METRICS_TOKEN)[2]
    pushes = value(at_central, "shopnode_central_pushes_total", store=north_id)
    assert value(again, "shopnode_central_pushes_total", store=north_id) == pushes + 1
    assert value(again, "shopnode_central_changes_ingested_total", store=north_id) == made


def test_central_metrics_need_their_token(shops: Shops) -> None:
    central = shops.central
    north, _ = shop(shops, "north")
    assert scrape(central.url, None)[0] == 401
    assert scrape(central.url, north.env["SHOPNODE_SYNC_TOKEN"])[0] == 401  # a store's token
    assert scrape(central.url, north.token)[0] == 401  # a shop's owner token
    assert scrape(central.url, METRICS_TOKEN + "x")[0] == 401
    assert call(north, "GET", "/api/v1/customers")[0] == 200


def test_central_without_metrics_token_refuses_to_start_and_metrics_are_off_by_default(
    tmp_path: Path,
) -> None:
    env = {"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{tmp_path / 'central.db'}",
           "SHOPNODE_CENTRAL_PORT": "0"}  # fmt: skip
    done = shopnode("central", "serve", env={**env, "SHOPNODE_METRICS_ENABLED": "true"})
    assert done.returncode == 2
    assert "metrics.token" in done.stderr and "Traceback" not in done.stderr
    short = shopnode("central", "serve", env={**env, "SHOPNODE_METRICS_TOKEN": "short"})
    assert short.returncode == 2 and "metrics.token" in short.stderr
    plain = start_central(env, tmp_path / "central.log")
    try:
        assert scrape(plain.url, METRICS_TOKEN)[0] == 404
    finally:
        plain.stop()
