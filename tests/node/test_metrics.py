"""`GET /metrics` on a shop node, scraped over HTTP from real processes as Prometheus would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from node import metrics
from tests.conftest import call
from tests.metrics_scrape import samples, scrape, value
from tests.node.test_exposure import raw_http
from tests.processes import shopnode, start_node

CUSTOMER = "/api/v1/customers/{id}"
REQUESTS = "shopnode_http_requests_total"
BUCKETS = "shopnode_http_request_duration_seconds_bucket"


def test_an_owner_scrapes_requests_by_route_pattern_and_status(node_env, tmp_path: Path) -> None:
    env = {**node_env, "SHOPNODE_METRICS_ENABLED": "true"}
    node = start_node(env, tmp_path / "node.log")
    try:
        made = shopnode("token", "create", "--name", "till", "--role", "staff", env=env)
        staff = made.stdout.strip().splitlines()[-1]
        status, _, before = scrape(node.url, node.token)
        assert status == 200
        assert value(before, REQUESTS, route=CUSTOMER) == 0

        status, customer = call(node, "POST", "/api/v1/customers",
                                {"name": "Zelda Quimby", "phone": "+1 555 867 5309"})  # fmt: skip
        assert status == 201
        cid = customer["id"]
        for _ in range(2):
            assert call(node, "GET", f"/api/v1/customers/{cid}")[0] == 200
        assert call(node, "GET", f"/api/v1/customers/{uuid.uuid4()}")[0] == 404
        assert call(node, "GET", "/api/v1/customers?search=Zelda")[0] == 200
        raw_http(node.url, b"PROPFIND /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n")  # fmt: skip
        assert call(node, "GET", f"/wp-login.php?user={cid}")[0] == 404

        status, text, after = scrape(node.url, node.token)
        assert status == 200
        # The customer's creation went through the writer: one write, in one group at least.
        assert value(after, "shopnode_writes_committed_total") >= 1
        assert value(after, "shopnode_write_group_size_count") >= 1
        assert value(after, REQUESTS, method="GET", route=CUSTOMER, status="200") == 2
        assert value(after, REQUESTS, method="GET", route=CUSTOMER, status="404") == 1
        assert value(after, REQUESTS, method="POST", route="/api/v1/customers", status="201") == 1
        assert value(after, REQUESTS, method="GET", route="/metrics", status="200") == 1
        # A method or a path nobody declared shares one label: no series per scanner probe.
        assert value(after, REQUESTS, method="other") == 1
        assert value(after, REQUESTS, route="(no route)", status="404") == 1
        # Latency: every bucket of the route, cumulative up to +Inf = its count.
        buckets = samples(after, BUCKETS, method="GET", route=CUSTOMER)
        assert len(buckets) == len(metrics.LATENCY_BUCKETS) + 1
        assert max(b.value for b in buckets) == value(after, BUCKETS, method="GET",
                                                      route=CUSTOMER, le="+Inf") == 3
        assert after["shopnode_http_request_duration_seconds"].type == "histogram"
        assert value(after, "process_resident_memory_bytes") > 0
        # Route patterns only: no id, token, name or phone in any label.
        for secret in (cid, node.token, staff, "Zelda", "8675309", "wp-login"):
            assert secret not in text

        status, body, _ = scrape(node.url, staff)
        assert status == 403 and "owner" in body
        assert scrape(node.url, None)[0] == 401
        assert scrape(node.url, "sn_not_a_token_at_all")[0] == 401
    finally:
        node.stop()


def test_metrics_are_off_by_default(node) -> None:
    status, body, _ = scrape(node.url, node.token)
    assert status == 404
    assert "no route for /metrics" in body


async def test_write_groups_show_in_every_apps_scrape(aiohttp_client, tmp_path: Path) -> None:
    from node import tokens
    from node.api.app import create_app
    from node.config import load_config

    environ = {"SHOPNODE_NODE_DATA_DIR": str(tmp_path / "data"), "SHOPNODE_METRICS_ENABLED": "1"}
    client = await aiohttp_client(create_app(load_config(environ=environ)))
    headers = {"Authorization": f"Bearer {tokens.create_token('owner')}"}

    async def scraped() -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        response = await client.get("/metrics", headers=headers)
        assert response.status == 200
        return {f.name: f for f in text_string_to_metric_families(await response.text())}

    before = await scraped()
    metrics.observe_write_group(5)
    metrics.observe_write_group(1)
    after = await scraped()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("shopnode_writes_committed_total") == 6
    assert moved("shopnode_write_group_size_count") == 2
    assert moved("shopnode_write_group_size_bucket", le="1.0") == 1
    assert moved("shopnode_write_group_size_bucket", le="4.0") == 1
    assert moved("shopnode_write_group_size_bucket", le="8.0") == 2


def test_metrics_settings_that_are_not_a_yes_or_no_are_refused(shopnode_main, tmp_path) -> None:
    refused = shopnode_main("serve", env={"SHOPNODE_METRICS_ENABLED": "maybe"})
    assert refused.returncode == 2
    assert "SHOPNODE_METRICS_ENABLED: must be true or false" in refused.stderr
    config = tmp_path / "shopnode.toml"
    config.write_text('[metrics]\nenabled = "yes"\n')
    refused = shopnode_main("serve", "--config", str(config), env={})
    assert refused.returncode == 2 and "metrics.enabled: must be bool" in refused.stderr


def test_the_last_backups_age(node_env, tmp_path: Path) -> None:
    env = {**node_env, "SHOPNODE_METRICS_ENABLED": "true",
           "SHOPNODE_BACKUP_DIR": str(tmp_path / "backups")}  # fmt: skip
    node = start_node(env, tmp_path / "node.log")
    try:
        assert samples(scrape(node.url, node.token)[2], "shopnode_backup_last_age_seconds") == []
        # A backup from 2 hours ago, as a schedule or `shopnode backup` would name it.
        backups = tmp_path / "backups"
        backups.mkdir(exist_ok=True)
        taken = datetime.now(UTC) - timedelta(hours=2)
        (backups / f"shop-{taken.strftime('%Y%m%dT%H%M%SZ')}.db").write_bytes(b"")
        age = value(scrape(node.url, node.token)[2], "shopnode_backup_last_age_seconds")
        assert 7190 <= age <= 7300
    finally:
        node.stop()
