"""Scraping `/metrics` as Prometheus does: over HTTP, parsed with prometheus-client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Families = dict[str, Any]


def scrape(url: str, token: str | None) -> tuple[int, str, Families]:
    """GET {url}/metrics with a bearer token: status, body, and the metric families by name
    (none unless 200)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url + "/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(), {}
    return 200, text, {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: Families, name: str, **labels: str) -> list[Sample]:
    """The samples called `name` (a family's own name or one of its series, such as
    `x_bucket`) whose labels include `labels`."""
    family = families.get(name) or families.get(name.rsplit("_", 1)[0])
    if family is None:
        return []
    return [s for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip


def value(families: Families, name: str, **labels: str) -> float:
    """The sum of the matching samples' values (0 when there are none)."""
    return sum(sample.value for sample in samples(families, name, **labels))
