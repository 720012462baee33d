"""bench/run.py's results as the issue's table, a chart and a section of bench/README.md.

`rows()` turns the figures of one run into one line per target: measured value, the
baseline measured in the same run, their ratio, the target and whether it is met.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import INGEST_TARGETS, table

README = Path(__file__).resolve().parent / "README.md"
CHART = Path(__file__).resolve().parent / "run.png"
START, END = "<!-- run.py table: start -->", "<!-- run.py table: end -->"


@dataclass
class Row:
    measure: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None  # None: nothing to hold it against

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}×"
        met = {True: "met", False: "NOT MET", None: ""}[self.met]
        return [self.measure, self.value, self.baseline, ratio, self.target, met]


HEADER = ["measure", "value", "baseline (same run)", "ratio", "target", ""]


def group(load: dict[str, Any], name: str) -> dict[str, Any]:
    return load["groups"][name]


def rows(res: dict[str, Any]) -> list[Row]:
    """One line per target of issue 12, for the parts that ran."""
    out: list[Row] = []
    hello = group(res["hello"], "hello")["rate"] if "hello" in res else None
    get = group(res["get"], "GET") if "get" in res else None

    def ratio(value: float, base: float | None) -> float | None:
        return value / base if base else None

    def at_least(value: float | None, floor: float) -> bool | None:
        return None if value is None else value >= floor

    def errors(*groups: dict[str, Any]) -> str:
        bad = sum(g["non_2xx"] for g in groups)
        return f" ({bad} failed)" if bad else ""

    if "get" in res.get("parts", ()) and get:
        r = ratio(get["rate"], hello)
        out.append(Row("GET customer by id, req/s", f"{get['rate']:,.0f} req/s" + errors(get),
                       f"bare aiohttp {hello:,.0f} req/s" if hello else "", r, "≥ 0.5×",
                       at_least(r, 0.5) and not get["non_2xx"]))  # fmt: skip
    if "search" in res:
        s = group(res["search"], "search")
        ok = not s["non_2xx"]
        if "search_latency" in res:
            o = group(res["search_latency"], "search")
            matches = f"; {o['matches_p50']:,.0f} matches p50" if o["matches_p50"] else ""
            out.append(Row(f"search p99, open loop at {o['offered']:,.0f}/s (½ of its req/s"
                           f"{matches})",
                           f"{o['p99_ms']:.1f} ms" + errors(o),
                           f"closed loop {s['p99_ms']:.1f} ms", None, "≤ 25 ms",
                           o["p99_ms"] <= 25 and not o["non_2xx"]))  # fmt: skip
        r = ratio(s["rate"], hello)
        out.append(Row("search req/s (4 letters of a surname or 4 digits)",
                       f"{s['rate']:,.0f} req/s" + errors(s),
                       f"bare aiohttp {hello:,.0f} req/s" if hello else "", r, "≥ 0.1×",
                       at_least(r, 0.1) and ok))  # fmt: skip
    if "payment" in res:
        p = group(res["payment"], "payment")
        raw = res["raw_commits"]["rate"]
        r = ratio(p["rate"], raw)
        out.append(Row("payment POST (credit, Idempotency-Key), req/s",
                       f"{p['rate']:,.0f} req/s" + errors(p),
                       f"raw SQLite durable commits {raw:,.0f}/s", r, "≥ 0.5×",
                       at_least(r, 0.5) and not p["non_2xx"]))  # fmt: skip
    if "mixed" in res and get:
        m, pay = group(res["mixed"], "GET"), group(res["mixed"], "payment")
        if "mixed_latency" in res:
            lm, lp = group(res["mixed_latency"], "GET"), group(res["mixed_latency"], "payment")
            out.append(Row(f"GET p99 while payments post, open loop at {lm['offered']:,.0f} "
                           f"GET/s + {lp['offered']:,.0f} payments/s (½ of the next row's)",
                           f"{lm['p99_ms']:.1f} ms" + errors(lm, lp),
                           f"closed loop {m['p99_ms']:.1f} ms", None, "≤ 8 ms",
                           lm["p99_ms"] <= 8 and not (lm["non_2xx"] or lp["non_2xx"])))  # fmt: skip
        r, ok = ratio(m["rate"], get["rate"]), not (m["non_2xx"] or pay["non_2xx"])
        out.append(Row(f"GET req/s while payments post (half the clients each; "
                       f"{pay['rate']:,.0f} payments/s)",
                       f"{m['rate']:,.0f} req/s" + errors(m, pay),
                       f"GET alone {get['rate']:,.0f} req/s", r,
                       "≥ 0.6×", at_least(r, 0.6) and ok))  # fmt: skip
    if "import" in res:
        i = res["import"]
        note = "" if i["ok"] else " (FAILED)" if i["finished"] else " (stopped: --timeout)"
        out.append(Row(f"`shopnode import customers` of {i['rows']:,} rows",
                       f"{i['rate']:,.0f} rows/s in {i['seconds']:.1f} s" + note, "", None,
                       "≥ 20,000 rows/s",
                       i["rate"] >= 20_000 and i["ok"]))  # fmt: skip
    if "catchup" in res:
        c = res["catchup"]
        ok = not c["problems"]
        note = "" if ok else " (books WRONG)" if c["finished"] else " (stopped: --timeout)"
        out.append(Row(f"catch-up of {c['changes']:,} changes (`shopnode sync`, new shop)",
                       f"{c['rate']:,.0f} changes/s in {c['wall']:.1f} s" + note, "", None,
                       "≥ 10,000 changes/s", c["rate"] >= 10_000 and ok))  # fmt: skip
        rss = "not measured (stopped)" if c["rss"] is None else f"{c['rss']:.0f} MB"
        out.append(Row("catch-up peak RSS", rss, "", None, "≤ 150 MB",
                       None if c["rss"] is None else c["rss"] <= 150))  # fmt: skip
    if "serve_catchup" in res:
        sc = res["serve_catchup"]
        g = group(sc["load"], "GET")
        out.append(Row(f"GET p99 while a catch-up runs in `serve` ({sc['applied']:,} changes "
                       f"in {sc['load']['elapsed']:.0f} s)", f"{g['p99_ms']:.1f} ms" + errors(g),
                       f"GET alone {get['p99_ms']:.1f} ms" if get else "", None, "≤ 50 ms",
                       g["p99_ms"] <= 50 and not g["non_2xx"] and sc["applied"] > 0))  # fmt: skip
    for engine, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        i, floor = res.get(f"ingest_{engine}"), INGEST_TARGETS[engine]
        if i:
            out.append(Row(f"central ingest, {label}", f"{i['ingest']:,.0f} changes/s",
                           f"raw batched insert {i['raw']:,.0f} rows/s", i["ratio"],
                           f"≥ {floor}×", i["ratio"] >= floor))  # fmt: skip
    if "rss" in res:
        out.append(Row(f"idle RSS of `serve` with {res['customers']:,} customers",
                       f"{res['rss']['rss_mb']:.0f} MB",
                       f"peak {res['rss']['hwm_mb']:.0f} MB", None, "≤ 70 MB",
                       res["rss"]["rss_mb"] <= 70))  # fmt: skip
    for key, reason in res.get("failed", {}).items():
        out.append(Row(f"{key}: FAILED", reason[:80]))
    return out


def text_table(found: list[Row]) -> str:
    return table(HEADER, [r.cells() for r in found], left=(0, 1, 2, 4, 5))


def markdown_table(found: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER[:5] + ["met"]) + " |", "|---|---|---|---|---|---|"]
    for r in found:
        cells = [c.replace("|", "\\|") for c in r.cells()]
        cells[5] = {"met": "yes", "NOT MET": "**no**"}.get(cells[5], cells[5])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(res: dict[str, Any]) -> str:
    """Every HTTP load of the run: rate, latencies, failures and who used the CPU."""
    out = []
    for key in ("hello", "get", "search", "search_latency", "payment", "mixed",
                "mixed_latency"):  # fmt: skip
        if key not in res:
            continue
        load = res[key]
        server = next(iter(load["watch_cpu"].values()), 0.0)
        for name, g in load["groups"].items():
            kind = f"{key.removesuffix('_latency')}: {name}"
            if g.get("offered"):
                kind += f", open loop ({g['offered']:,.0f}/s offered)"
            out.append([
                kind, str(g["connections"]), f"{g['rate']:,.0f}",
                f"{g['p50_ms']:.1f}", f"{g['p99_ms']:.1f}", f"{g['max_ms']:.0f}",
                str(g["non_2xx"]), f"{server:.0%}", f"{load['client_cpu']:.0%}",
            ])  # fmt: skip
    if "serve_catchup" in res:
        load = res["serve_catchup"]["load"]
        g = group(load, "GET")
        server = next(iter(load["watch_cpu"].values()), 0.0)
        out.append([
            "during catch-up: GET", str(g["connections"]), f"{g['rate']:,.0f}",
            f"{g['p50_ms']:.1f}", f"{g['p99_ms']:.1f}", f"{g['max_ms']:.0f}", str(g["non_2xx"]),
            f"{server:.0%}", f"{load['client_cpu']:.0%}",
        ])  # fmt: skip
    header = ["load", "conns", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "server CPU",
              "client CPU"]  # fmt: skip
    return table(header, out) if out else ""


# --------------------------------------------------------------------------- chart

REQS = [
    ("hello", "hello", "bare aiohttp (baseline)"),
    ("get", "GET", "GET customer"),
    ("search", "search", "search"),
    ("payment", "payment", "payment POST"),
    ("mixed", "GET", "GET while paying"),
    ("mixed", "payment", "payment while GETs"),
]
# The p99 panel: the closed loops above, then the open loops the latency targets are read on.
LATENCY_REQS = [
    ("search_latency", "search", "search, open loop at ½"),
    ("mixed_latency", "GET", "GET while paying, open loop at ½"),
]
TARGET_P99 = {"search, open loop at ½": 25, "GET while paying, open loop at ½": 8,
              "GET during catch-up": 50}  # fmt: skip


def chart(res: dict[str, Any], path: Path, title: str) -> Path | None:
    """req/s and p99 per endpoint next to the baselines, as a PNG; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    bars = [(label, group(res[key], name)) for key, name, label in REQS if key in res]
    if "serve_catchup" in res:
        bars.append(("GET during catch-up", group(res["serve_catchup"]["load"], "GET")))
    if not bars:
        return None
    rates = [(label, g["rate"]) for label, g in bars]
    bars += [(label, group(res[key], name)) for key, name, label in LATENCY_REQS if key in res]
    if "raw_commits" in res:
        rates.insert(4, ("raw SQLite commits (baseline)", res["raw_commits"]["rate"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rates) + 2.2))
    colour = lambda label: "#999999" if "baseline" in label else "#3b6fb6"  # noqa: E731
    names = [label for label, _ in rates][::-1]
    left.barh(names, [v for _, v in rates][::-1], color=[colour(n) for n in names])
    left.set_xlabel("requests (commits) per second, higher is better")
    for y, (_, v) in enumerate(rates[::-1]):
        left.annotate(f" {v:,.0f}", (v, y), va="center", fontsize=8)
    p99 = [(label, g["p99_ms"]) for label, g in bars][::-1]
    right.barh([n for n, _ in p99], [v for _, v in p99], color=[colour(n) for n, _ in p99])
    right.set_xscale("log")
    right.set_xlabel("p99 latency, ms (log scale), lower is better; | = target")
    for y, (label, v) in enumerate(p99):
        right.annotate(f" {v:.1f}", (v, y), va="center", fontsize=8)
        if label in TARGET_P99:
            right.plot([TARGET_P99[label]] * 2, [y - 0.4, y + 0.4], color="#c0392b", lw=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- README


def update_readme(section: str, path: Path = README) -> None:
    """Replace what stands between the markers in bench/README.md with `section`."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {START} ... {END} markers")
    path.write_text(pattern.sub(lambda _: f"{START}\n{section.strip()}\n{END}", text))
