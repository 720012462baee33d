"""Issue 12's measurements in one run, each next to a baseline measured in the same run.

Builds a shop of --customers customers, serves it with a real `shopnode serve` (its own
process) and a bare aiohttp app (bench/hello.py, its own process) on 127.0.0.1, and drives
both from one load-generating process (bench/load.py: aiohttp client, --connections
keep-alive connections). Then times `shopnode import customers`, a catch-up with
`shopnode sync` and inside `serve`, and central's ingest against a raw batched insert
(bench/sync.py's phases). Prints one line per target: value, baseline, ratio, target, met.

Parts (--only a,b,...): get, search, payment, mixed, rss, import, catchup, serve-catchup,
ingest. Each part runs the baselines it needs. Everything lives in a temporary directory
removed at the end (Ctrl-C and SIGTERM included); the only traffic is to 127.0.0.1 (and
PostgreSQL at 127.0.0.1:5432 for ingest, skipped with a note if it is not there).

Run: python bench/run.py [--only get,search] [--customers 100000] [--connections 32]
Chart: pip install -e '.[bench]' (matplotlib) and run.py also draws bench/run.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a clean checkout without installing the package
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench import sync as sync_bench  # noqa: E402
from bench.common import (  # noqa: E402
    PROCS,
    filesystem_of,
    load_average,
    machine_line,
    proc_status_kb,
    stop,
    stop_all,
    vm_hwm_kb,
)
from bench.load import Load, group  # noqa: E402
from bench.shop import build_shop  # noqa: E402
from tests import processes  # noqa: E402

BENCH = Path(__file__).resolve().parent
PARTS = ("get", "search", "payment", "mixed", "rss", "import", "catchup", "serve-catchup",
         "ingest")  # fmt: skip
SERVED = {"get", "search", "payment", "mixed", "rss", "serve-catchup"}  # need the 100k shop
SYNCED = {"catchup", "serve-catchup", "ingest"}  # need generated changes
PAYMENT = {"type": "credit", "amount": 1000, "description": "bench: payment received"}
# The latency targets are read at this share of the rate the node served on the same mix with
# a closed loop in the same run, offered as an open loop (bench/load.py): at a closed loop's
# saturation, latency is just connections / throughput (see bench/README.md).
LATENCY_SHARE = 0.5


# --------------------------------------------------------------------------- processes


def start_node(tmp: Path, data_dir: Path, timeout: float, name: str = "node",
               **env: str) -> processes.NodeProcess:  # fmt: skip
    """`shopnode serve` on a shop's data dir, 127.0.0.1, a free port; `env` on top."""
    env = {"SHOPNODE_NODE_DATA_DIR": str(data_dir), "SHOPNODE_API_PORT": "0", **env}
    log = tmp / f"{name}.log"
    node = processes.NodeProcess(("serve",), env, log, log.with_suffix(".out"), tmp)
    node.start(timeout=timeout)
    PROCS.append(node.proc)
    if not node.token:
        raise RuntimeError("shopnode serve printed no owner token on its first start")
    return node


def start_hello(tmp: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """bench/hello.py, once it listens; its process and URL."""
    log = tmp / "hello.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(BENCH / "hello.py")], stdout=out,
                                stderr=subprocess.STDOUT, env=processes.child_env())  # fmt: skip
    PROCS.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = processes.LISTENING.search(log.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"bench/hello.py did not start: {log.read_text()[-2000:]}")


def drive(args: argparse.Namespace, tmp: Path, base: str, groups: list[dict[str, Any]],
          pid: int, label: str) -> dict[str, Any]:  # fmt: skip
    """One load of --seconds after --warmup; prints a line per group, returns the figures."""
    result = Load(tmp, base, groups, args.seconds, args.warmup, {"server": pid}).result()
    for name, g in result["groups"].items():
        offered = f" ({g['offered']:,.0f}/s offered)" if g.get("offered") else ""
        print(f"  {label + offered:<24} {name:<8} {g['connections']:>3} conns  "
              f"{g['rate']:>8,.0f} req/s  "
              f"p50 {g['p50_ms']:6.1f} ms  p99 {g['p99_ms']:7.1f} ms  non-2xx {g['non_2xx']}"
              + (f"  e.g. {g['failures'][0][:120]!r}" if g["failures"] else ""),
              flush=True)  # fmt: skip
    return result


# --------------------------------------------------------------------------- parts


def durable_commits(path: Path, seconds: float) -> dict[str, float]:
    """The payment baseline: a plain sqlite3 loop, one row per transaction, WAL with
    synchronous=FULL (every commit fsync'd), on the same filesystem as the node's data."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=full")
    conn.execute("CREATE TABLE payment(id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
    insert = "INSERT INTO payment(amount, note) VALUES (?, 'bench')"
    for i in range(20):  # warm-up
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, (i,))
        conn.execute("COMMIT")
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, (done,))
        conn.execute("COMMIT")
        done += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return {"rate": done / elapsed, "ms": elapsed / done * 1000}


def served_parts(args: argparse.Namespace, tmp: Path, shop: dict[str, Any],
                 res: dict[str, Any]) -> None:  # fmt: skip
    """GET, search, payment, GETs while payments post, idle RSS: `serve` under load."""
    parts = args.parts
    print(f"\n== HTTP: `shopnode serve` and a bare aiohttp app, one client process, "
          f"{args.connections} connections ==", flush=True)  # fmt: skip
    node = start_node(tmp, shop["data_dir"], args.timeout)
    auth = {"Authorization": f"Bearer {node.token}"}
    gets = [f"/api/v1/customers/{i}" for i in shop["ids"]]
    pays = [f"/api/v1/customers/{i}/ledger" for i in shop["ids"]]
    pid, conns, half = node.proc.pid, args.connections, args.connections // 2
    if parts & {"get", "search"}:
        hello, url = start_hello(tmp, args.timeout)
        try:
            res["hello"] = drive(args, tmp, url, [group("hello", conns, "GET", ["/hello"])],
                                 hello.pid, "bare aiohttp")  # fmt: skip
        finally:
            stop(hello)
    if parts & {"get", "mixed", "serve-catchup"}:
        res["get"] = drive(args, tmp, node.url, [group("GET", conns, "GET", gets, auth)], pid,
                           "GET customer")  # fmt: skip
    if "search" in parts:
        searches = [f"/api/v1/customers?search={t}&limit=20" for t in shop["terms"]]
        res["search"] = drive(args, tmp, node.url, [group("search", conns, "GET", searches, auth)],
                              pid, f"search {shop['terms'][0]!r}, ...")  # fmt: skip
        rate = max(1.0, LATENCY_SHARE * res["search"]["groups"]["search"]["rate"])
        res["search_latency"] = drive(args, tmp, node.url,
                                      [group("search", conns, "GET", searches, auth, rate=rate)],
                                      pid, "search, open loop")  # fmt: skip
    if "rss" in parts:
        time.sleep(2)  # idle
        res["rss"] = {"rss_mb": proc_status_kb(pid, "VmRSS") / 1024,
                      "hwm_mb": vm_hwm_kb(pid) / 1024}  # fmt: skip
        print(f"  idle RSS of serve: {res['rss']['rss_mb']:.0f} MB "
              f"(peak so far {res['rss']['hwm_mb']:.0f} MB)", flush=True)  # fmt: skip
    if "payment" in parts:
        res["raw_commits"] = durable_commits(tmp / "raw-commits.db", args.seconds)
        print(
            f"  raw SQLite durable commits: {res['raw_commits']['rate']:,.0f}/s "
            f"({res['raw_commits']['ms']:.2f} ms each) on {filesystem_of(tmp)}",
            flush=True,
        )
        res["payment"] = drive(args, tmp, node.url,
                               [group("payment", conns, "POST", pays, auth, PAYMENT)], pid,
                               "payment POST")  # fmt: skip
    if "mixed" in parts:
        res["mixed"] = drive(args, tmp, node.url,
                             [group("GET", half, "GET", gets, auth),
                              group("payment", conns - half, "POST", pays, auth, PAYMENT)],
                             pid, "GET + payment")  # fmt: skip
        rates = {k: max(1.0, LATENCY_SHARE * g["rate"]) for k, g in res["mixed"]["groups"].items()}
        res["mixed_latency"] = drive(
            args, tmp, node.url,
            [group("GET", half, "GET", gets, auth, rate=rates["GET"]),
             group("payment", conns - half, "POST", pays, auth, PAYMENT, rate=rates["payment"])],
            pid, "GET + payment, open loop")  # fmt: skip
    stop(node.proc)


def import_part(args: argparse.Namespace, tmp: Path, shop: dict[str, Any]) -> dict[str, Any]:
    """`shopnode import customers FILE` of the shop's customers into a new shop; stopped
    after --timeout seconds, its rate then taken from the customers it had imported."""
    print(f"\n== `shopnode import customers` of {shop['rows']:,} rows into a new shop ==",
          flush=True)  # fmt: skip
    data_dir = tmp / "import" / "data"
    log = tmp / "import.log"
    env = processes.child_env({"SHOPNODE_NODE_DATA_DIR": str(data_dir)})
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "node", "import", "customers",
                                 str(shop["csv"])], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp)  # fmt: skip
    PROCS.append(proc)
    try:
        proc.wait(args.timeout)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    seconds = time.perf_counter() - t0
    stop(proc)
    if finished:
        summary = (log.read_text().strip().splitlines() or [""])[-1]
        ok, done = summary.startswith(f"imported {shop['rows']},"), shop["rows"]
    else:
        done = count_rows(data_dir, "customer")
        ok, summary = False, f"stopped after {seconds:.0f} s with {done:,} rows imported"
    print(f"  {summary}: {seconds:.1f} s = {done / seconds:,.0f} rows/s (the whole command)",
          flush=True)  # fmt: skip
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    return {"rows": shop["rows"], "seconds": seconds, "rate": done / seconds, "ok": ok,
            "finished": finished, "summary": summary}  # fmt: skip


def sync_args(args: argparse.Namespace) -> argparse.Namespace:
    """What bench/sync.py's phases read from their command line."""
    return argparse.Namespace(
        catchup_changes=args.changes, catchup_stores=args.stores, catchup_customers=1000,
        catchup_engine="sqlite", seed=args.seed, pushers=args.pushers, timeout=args.timeout,
        profile=False,
    )  # fmt: skip


def synced_parts(args: argparse.Namespace, tmp: Path, shop: dict[str, Any],
                 res: dict[str, Any]) -> None:  # fmt: skip
    """Central ingest vs raw insert; catch-up inside `serve`, and by `shopnode sync`."""
    sargs = sync_args(args)
    data = sync_bench.catchup_data(sargs)
    if "ingest" in args.parts:
        for engine in args.engines:
            attempt(res, f"ingest_{engine}", ingest, engine, sargs, tmp, data)
    if not args.parts & {"catchup", "serve-catchup"}:
        return
    work = tmp / "catchup"
    nodes = ["serving", "fresh"]
    with sync_bench.filled_central(sargs, work, None, data, nodes) as (central, tokens):
        # The serving node first: a catch-up that overruns --timeout stops every child.
        if "serve-catchup" in args.parts and "serving_dir" in shop:
            attempt(res, "serve_catchup", serve_catchup, args, tmp, shop, central.url,
                    tokens["serving"])  # fmt: skip
        if "catchup" in args.parts:
            attempt(res, "catchup", cli_catchup, sargs, work, central, tokens["fresh"], data)


def ingest(engine: str, sargs: argparse.Namespace, tmp: Path,
           data: list[sync_bench.StoreData]) -> dict[str, Any]:  # fmt: skip
    """bench/sync.py's ingest phase (central over HTTP, then the raw insert) on one engine."""
    pg = sync_bench.Postgres() if engine == "postgresql" else None
    try:
        return sync_bench.ingest(engine, sargs, tmp, data, pg)
    finally:
        if pg:
            pg.close()


def cli_catchup(sargs: argparse.Namespace, work: Path, central: sync_bench.Central, token: str,
                data: list[sync_bench.StoreData]) -> dict[str, Any]:  # fmt: skip
    """bench/sync.py's catch-up of a new shop; stopped after --timeout seconds, its rate then
    taken from the changes it had applied."""
    changes = sum(d.totals.changes for d in data)
    t0 = time.perf_counter()
    try:
        out = sync_bench.catch_up_fresh_node(sargs, work, central, token, data)
    except sync_bench.BenchError as exc:
        if "did not finish" not in str(exc):
            raise
        seconds, done = time.perf_counter() - t0, count_rows(work / "fresh-node", "change_log")
        print(f"  stopped after {seconds:.0f} s with {done:,} of {changes:,} changes applied "
              f"= {done / seconds:,.0f} changes/s", flush=True)  # fmt: skip
        out = {"rate": done / seconds, "wall": seconds, "rss": None, "finished": False,
               "problems": [f"stopped after {seconds:.0f} s"]}  # fmt: skip
    shutil.rmtree(work / "fresh-node", ignore_errors=True)
    return {"finished": True, **out, "changes": changes}


def count_rows(data_dir: Path, table: str) -> int:
    """Rows of a table of a shop database, read while (or after) another process writes."""
    path = data_dir / "shop.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # created, not yet migrated
        return 0
    finally:
        conn.close()


def sync_status(node: processes.NodeProcess) -> dict[str, Any]:
    request = urllib.request.Request(f"{node.url}/api/v1/sync/status",
                                     headers={"Authorization": f"Bearer {node.token}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def serve_catchup(args: argparse.Namespace, tmp: Path, shop: dict[str, Any], central_url: str,
                  token: str) -> dict[str, Any]:  # fmt: skip
    """A copy of the shop (no changes of its own) served with sync on: its first round
    catches up with central while GETs by id run, for --catchup-window s or until it ends."""
    print(f"\n== GET by id while `serve` catches up ({args.connections} connections, "
          f"<= {args.catchup_window:g} s) ==", flush=True)  # fmt: skip
    node = start_node(tmp, shop["serving_dir"], args.timeout, "serving",
                      SHOPNODE_SYNC_CENTRAL_URL=central_url,
                      SHOPNODE_SYNC_TOKEN=token)  # fmt: skip
    try:
        gets = [f"/api/v1/customers/{i}" for i in shop["ids"]]
        auth = {"Authorization": f"Bearer {node.token}"}
        load = Load(tmp, node.url, [group("GET", args.connections, "GET", gets, auth)],
                    args.catchup_window, 0, {"server": node.proc.pid})  # fmt: skip
        load.wait_counting()
        before = count_rows(shop["serving_dir"], "change_log")
        finished, status = False, {}
        while load.running():
            time.sleep(0.25)
            status = sync_status(node)
            if status.get("last_success_at") or status.get("last_error"):
                finished = True  # the first round is over: stop counting
                load.stop()
                break
        result = load.result()
        applied = count_rows(shop["serving_dir"], "change_log") - before
    finally:
        stop(node.proc)
    g = result["groups"]["GET"]
    print(f"  {applied:,} changes applied while {g['done']:,} GETs ran in {result['elapsed']:.1f} s"
          f" ({'the round ended' if finished else 'the round went on'}"
          + (f"; sync error: {status['last_error']}" if status.get("last_error") else "")
          + f"); GET {g['rate']:,.0f} req/s, p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, "
          f"max {g['max_ms']:.0f} ms, non-2xx {g['non_2xx']}", flush=True)  # fmt: skip
    return {"load": result, "applied": applied, "finished": finished}


def attempt(res: dict[str, Any], key: str, step: Any, *args: Any) -> None:
    """res[key] = step(*args); a step that fails is reported and the run goes on."""
    try:
        result = step(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of one part, named in the table
        print(f"  {key} failed: {type(exc).__name__}: {str(exc)[-1500:]}", flush=True)
        res.setdefault("failed", {})[key] = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        if result is not None:
            res[key] = result


# --------------------------------------------------------------------------- main


def commit() -> str:
    """The checkout's commit, so a table in the README says which code it measured."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip() or "?"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of: {', '.join(PARTS)}")  # fmt: skip
    parser.add_argument("--customers", type=int, default=100_000, help="customers in the shop")
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="counted seconds per load")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before")
    parser.add_argument("--changes", type=int, default=200_000, help="changes to catch up with")
    parser.add_argument("--stores", type=int, default=8, help="stores those changes come from")
    parser.add_argument("--pushers", type=int, default=6, help="concurrent pushers (ingest)")
    parser.add_argument("--engines", default="sqlite,postgresql", help="central engines (ingest)")
    parser.add_argument("--catchup-window", type=float, default=10.0,
                        help="most seconds of GETs while serve catches up")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds a step may take; an import or catch-up still running "
                             "then is stopped and rated on what it had done")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="where to make the temporary directory (its disk matters)")
    parser.add_argument("--chart", type=Path,
                        help=f"draw the chart here (a full run draws {report.CHART})")  # fmt: skip
    parser.add_argument("--readme", action="store_true",
                        help="put this run's table into bench/README.md")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    args.parts = {p.strip() for p in args.only.split(",") if p.strip()}
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.parts - set(PARTS) or not args.parts:
        parser.error(f"--only takes parts of: {', '.join(PARTS)}")
    if set(args.engines) - {"sqlite", "postgresql"}:
        parser.error("--engines takes sqlite and/or postgresql")
    if min(args.customers, args.changes, args.stores, args.pushers) < 1 or args.connections < 2:
        parser.error("sizes must be positive, --connections at least 2")
    if args.customers < 100:
        parser.error("--customers must be at least 100")
    return args


def main() -> int:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the children and cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, started_at = time.perf_counter(), datetime.now(UTC)
    first = f"{machine_line()} at the start"
    print(first, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="shopnode-bench-run-", dir=args.dir))
    res: dict[str, Any] = {"parts": sorted(args.parts), "customers": args.customers}
    try:
        first += f"; data on {filesystem_of(tmp)}"
        print(f"temporary directory {tmp} on {filesystem_of(tmp)}", flush=True)
        shop = {}
        if args.parts - {"ingest", "catchup"}:
            shop = build_shop(args.customers, args.seed, tmp, bool(args.parts & SERVED),
                              "serve-catchup" in args.parts, "import" in args.parts)  # fmt: skip
        if args.parts & SERVED:
            attempt(res, "served", served_parts, args, tmp, shop, res)
        if "import" in args.parts:
            attempt(res, "import", import_part, args, tmp, shop)
        if args.parts & SYNCED:
            synced_parts(args, tmp, shop, res)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started, removing the temporary directory")
        return 130
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    minutes = (time.perf_counter() - started) / 60
    last = f"load average at the end {load_average()}; the run took {minutes:.1f} min"
    found = report.rows(res)
    print(f"\n== issue 12 table ({args.customers:,} customers, {args.connections} connections, "
          f"baselines from this run) ==")  # fmt: skip
    print(report.text_table(found))
    if text := report.details(res):
        print("\nEvery HTTP load (server/client CPU: share of one core during the counted part)")
        print(text)
    print(f"\n{first}\n{last}")
    title = (f"shopnode bench/run.py, {started_at:%Y-%m-%d %H:%M} UTC, {args.customers:,} "
             f"customers, {args.connections} connections\n{first}; {last}")  # fmt: skip
    chart = args.chart or (report.CHART if args.parts == set(PARTS) else None)
    if chart:
        drawn = report.chart(res, chart, title)
        print(f"chart: {drawn}" if drawn else "chart: matplotlib is not installed; "
              "pip install -e '.[bench]' to draw it")  # fmt: skip
    if args.readme:
        command = "python bench/run.py" + (f" --only {args.only}" if args.parts != set(PARTS)
                                           else "")  # fmt: skip
        loads = f"\n\nEvery HTTP load:\n\n```\n{text}\n```" if text else ""
        report.update_readme(
            f"`{command}` on commit {commit()}, {started_at:%Y-%m-%d %H:%M} UTC "
            f"({minutes:.1f} min):\n\n{report.markdown_table(found)}{loads}\n\n{first}; {last}."
        )
        print(f"table written to {report.README}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
