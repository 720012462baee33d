"""Prometheus metrics (`GET /metrics` when `[metrics] enabled`): what a node or central is
doing, for an operator's dashboards and alerts.

Each app keeps its own CollectorRegistry, so several apps in one process (the tests) never
share a series. Request counters move as requests finish; figures that live in the database
(the push queue, pending changes) or elsewhere (the last backup) are read when Prometheus
scrapes, by a collector, never polled. Labels hold route patterns, methods, statuses,
outcomes and store ids: never a path as sent, a token or anything about a customer.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from node import backup
from node.api.auth import present_secret, require_owner
from node.api.keys import CONFIG, HEALTH, WRITER
from node.api.problems import Handler, problem, route_of
from node.clock import now, seconds_since
from node.config import Section

PATH = "/metrics"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds; a shop's requests take a few ms, a sync page or a report up to a few seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# A `_created` series beside every counter doubles the scrape for nothing a dashboard uses.
disable_created_metrics()

# Process-wide, unregistered: one writer thread and one sync worker per process, whichever
# app's registry is scraped (each app's registry collects them, see ProcessWide).
WRITES = Counter("shopnode_writes_committed", "Writes committed by the node's writer",
                 registry=None)  # fmt: skip
WRITE_GROUPS = Histogram(
    "shopnode_write_group_size",
    "Writes committed together in one transaction (one fsync)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=None,
)
SYNC_ROUNDS = Counter("shopnode_sync_rounds", "Sync rounds with central, by outcome "
                      "(ok, refused, unreachable, failed)", ["outcome"], registry=None)  # fmt: skip


def observe_write_group(size: int) -> None:
    """The writer committed `size` writes in one transaction (called after every group)."""
    WRITES.inc(size)
    WRITE_GROUPS.observe(size)


def observe_sync_round(outcome: str) -> None:
    """A sync round ended: ok, refused (central said no), unreachable, failed (here)."""
    SYNC_ROUNDS.labels(outcome).inc()


class ProcessWide(Collector):
    """The process-wide metrics, in an app's registry."""

    def collect(self) -> Iterable[Metric]:
        for metric in (WRITES, WRITE_GROUPS, SYNC_ROUNDS):
            yield from metric.collect()


class HttpMetrics:
    """An app's registry and its requests: by method, route pattern and status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shopnode_http_requests", "HTTP requests answered, by route pattern and status",
            ["method", "route", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram(
            "shopnode_http_request_duration_seconds", "Time to answer a request, by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        ProcessCollector(registry=self.registry)
        # (method, route, status) -> its two series: labels() costs more than the counting.
        self.series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        # A client may send any method name: unknown ones share one label, so a scanner
        # cannot make series without end. Unmatched paths are all "(no route)".
        key = (request.method if request.method in METHODS else "other", route_of(request), status)
        series = self.series.get(key)
        if series is None:
            method, route, _ = key
            series = self.series[key] = (self.requests.labels(method, route, str(status)),
                                         self.latency.labels(method, route))  # fmt: skip
        series[0].inc()
        series[1].observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count and time every answered request (a client that left gets no answer)."""
        start = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.observe(request, exc.status, time.perf_counter() - start)
            raise
        self.observe(request, response.status, time.perf_counter() - start)
        return response

    def exposition(self, request: web.Request) -> web.Response:
        """The registry in the format the scraper asks for (Prometheus text by default)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})


METRICS = web.AppKey("metrics", HttpMetrics)


def _install(app: web.Application, metrics: HttpMetrics, handler: Handler) -> None:
    app.middlewares.insert(0, metrics.middleware)
    app.router.add_get(PATH, handler)


# -- the shop node --------------------------------------------------------------------------


def install(app: web.Application, settings: Section) -> None:
    """`GET /metrics` on a node app, for owner tokens (node.api.auth checks the token)."""
    if not settings.enabled:
        return
    metrics = HttpMetrics()
    metrics.registry.register(ProcessWide())
    metrics.registry.register(NodeFigures(app))
    app[METRICS] = metrics
    _install(app, metrics, node_metrics)
    app.on_startup.append(watch_writer)


async def watch_writer(app: web.Application) -> None:
    """Count the writer's groups (it starts in the app's database context, before this)."""
    app[WRITER].stats.observers.append(observe_write_group)


async def node_metrics(request: web.Request) -> web.Response:
    """Prometheus text: requests, writes, sync and backup figures (owners only)."""
    require_owner(request, "read metrics")
    return request.app[METRICS].exposition(request)


def gauge(name: str, documentation: str, value: float | None) -> Iterator[Metric]:
    """A gauge family with one value, or nothing when the value is not known yet."""
    if value is not None:
        yield GaugeMetricFamily(name, documentation, value=value)


class NodeFigures(Collector):
    """Read at scrape time: the sync queue and progress, and the last backup's age."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        report = self.app[HEALTH].get("sync")
        if report is not None:  # sync is configured
            yield from sync_figures(report())
        last = backup.last_backup(self.app[CONFIG].backup_dir)
        yield from gauge("shopnode_backup_last_age_seconds",
                         "Seconds since the newest backup in the backup dir was taken",
                         (now() - last.taken_at).total_seconds() if last else None)  # fmt: skip


def sync_figures(status: dict[str, Any]) -> Iterator[Metric]:
    """Gauges out of the sync worker's status (sync.worker.SyncWorker.status)."""
    yield from gauge("shopnode_sync_push_queue_depth",
                     "Changes of this shop central has not acknowledged",
                     status["push_queue_depth"])  # fmt: skip
    yield from gauge("shopnode_sync_oldest_unsent_age_seconds",
                     "Age of the oldest change not yet acknowledged by central (0: none)",
                     status["oldest_unsent_age_seconds"] or 0)  # fmt: skip
    yield from gauge("shopnode_sync_pull_lag_changes",
                     "Central's changes past this node's pull cursor, at the last page read",
                     status.get("pull_lag"))  # fmt: skip
    yield from gauge("shopnode_sync_pending_changes",
                     "Others' changes waiting for a prerequisite", status["pending"])
    yield from gauge("shopnode_sync_quarantined_changes",
                     "Others' changes that could not be applied (reported, kept aside)",
                     status["reports"].get("quarantined", 0))  # fmt: skip
    yield from gauge("shopnode_sync_last_success_age_seconds",
                     "Seconds since the last sync round that completed",
                     seconds_since(status.get("last_success_at")))  # fmt: skip
    reports = GaugeMetricFamily("shopnode_sync_reports",
                                "Sync reports held, by kind (conflict, quarantined, ...)",
                                labels=["kind"])  # fmt: skip
    for kind, count in sorted(status["reports"].items()):
        reports.add_metric([kind], count)
    yield reports


# -- central --------------------------------------------------------------------------------


@dataclass
class StoreActivity:
    """What central last saw of one store (this process's view)."""

    last_push: float | None = None
    last_pull: float | None = None
    pull_lag: int = 0


class CentralMetrics(HttpMetrics):
    """Central's registry: requests, plus pushes, pulls and changes by store."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.pushes = Counter("shopnode_central_pushes", "Pushes taken, by store",
                              ["store"], registry=self.registry)  # fmt: skip
        self.pulls = Counter("shopnode_central_pulls", "Pull pages served, by store",
                             ["store"], registry=self.registry)  # fmt: skip
        self.ingested = Counter(
            "shopnode_central_changes_ingested", "Changes stored from pushes (new ones only), "
            "by store; its rate is the ingest rate", ["store"], registry=self.registry)
        self.served = Counter("shopnode_central_changes_served",
                              "Changes sent in pull pages, by store", ["store"],
                              registry=self.registry)  # fmt: skip
        self.stores: dict[str, StoreActivity] = {}
        self.registry.register(_Collected(self.store_figures))

    def pushed(self, store_id: str, stored: int) -> None:
        self.pushes.labels(store_id).inc()
        self.ingested.labels(store_id).inc(stored)
        self.stores.setdefault(store_id, StoreActivity()).last_push = time.time()

    def pulled(self, store_id: str, page: dict[str, Any]) -> None:
        self.pulls.labels(store_id).inc()
        self.served.labels(store_id).inc(len(page["changes"]))
        activity = self.stores.setdefault(store_id, StoreActivity())
        activity.last_pull = time.time()
        activity.pull_lag = max(0, page["high"] - page["next"])

    def store_figures(self) -> Iterator[Metric]:
        """Per store: its lag at its last pull, and how long ago it last pushed and pulled."""
        now = time.time()
        lag = GaugeMetricFamily(
            "shopnode_central_store_pull_lag_changes",
            "Central's changes past the store's cursor after its last pull page", labels=["store"])
        pull_age = GaugeMetricFamily("shopnode_central_store_last_pull_age_seconds",
                                     "Seconds since the store last pulled", labels=["store"])
        push_age = GaugeMetricFamily("shopnode_central_store_last_push_age_seconds",
                                     "Seconds since the store last pushed", labels=["store"])
        for store_id, activity in sorted(self.stores.items()):
            if activity.last_pull is not None:
                lag.add_metric([store_id], activity.pull_lag)
                pull_age.add_metric([store_id], now - activity.last_pull)
            if activity.last_push is not None:
                push_age.add_metric([store_id], now - activity.last_push)
        yield from (lag, pull_age, push_age)


CENTRAL_METRICS = web.AppKey("central_metrics", CentralMetrics)


class _Collected(Collector):
    """A collector out of a function that yields metric families."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def install_central(app: web.Application, settings: Section) -> None:
    """`GET /metrics` on central, for the bearer token `[metrics] token`."""
    if settings.enabled:
        app[CENTRAL_METRICS] = CentralMetrics(settings.token)
        _install(app, app[CENTRAL_METRICS], central_metrics)


async def central_metrics(request: web.Request) -> web.Response:
    """Prometheus text: requests, and pushes, pulls, ingest and lag by store."""
    metrics = request.app[CENTRAL_METRICS]
    secret = present_secret(request.headers.get("Authorization", ""))
    if not secret or not hmac.compare_digest(secret.encode(), metrics.token.encode()):
        return problem(401, "send the metrics token: 'Authorization: Bearer TOKEN'")
    return metrics.exposition(request)


def central_pushed(app: web.Application, store_id: str, stored: int) -> None:
    """A push was taken from `store_id`, `stored` of its changes new (metrics on)."""
    if (metrics := app.get(CENTRAL_METRICS)) is not None:
        metrics.pushed(store_id, stored)


def central_pulled(app: web.Application, store_id: str, page: dict[str, Any]) -> None:
    """A pull page was served to `store_id` (metrics on)."""
    if (metrics := app.get(CENTRAL_METRICS)) is not None:
        metrics.pulled(store_id, page)
