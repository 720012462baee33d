"""Throughput of the money writes through HTTP, next to an aiohttp hello-world in the same run.

The node app (node.api.app.create_app on a throwaway data dir) and a bare aiohttp JSON
hello-world app are both served by AppRunner on 127.0.0.1 in this process. A load generator
in a separate process (so it does not compete with the server for this process's GIL) sends:

  hello GET    GET /hello -> {"hello": "world"}                       (baseline)
  hello POST   POST /hello with a sale-sized JSON body, parsed, answered (baseline for ratios)
  payment      POST /api/v1/customers/{id}/ledger  {"type": "credit", ...}  + Idempotency-Key
  sale         POST /api/v1/sales  {"customer_id", "total", "payment_method"}  + Idempotency-Key

each one request at a time and with --concurrency clients, for --rounds interleaved rounds;
each run stops after --requests requests or --seconds seconds, whichever comes first.
Ratios are taken within a round (neighbouring runs), then the median over rounds.

Run: python bench/money.py [--requests 1000] [--seconds 5] [--rounds 3] [--concurrency 20]
Traffic goes only to 127.0.0.1; the data dir is a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a clean checkout without installing the package
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from bench.common import filesystem_of, load_average, machine_line, table  # noqa: E402
from node import customers, tokens  # noqa: E402
from node.api.app import create_app  # noqa: E402
from node.config import load_config  # noqa: E402
from node.db import database  # noqa: E402

HELLO_GET, HELLO_POST, PAYMENT, SALE = "hello GET", "hello POST", "payment", "sale"
SCENARIOS = [HELLO_GET, HELLO_POST, PAYMENT, SALE]
BASELINE = HELLO_POST
PAYMENT_NOTE = "bench: cash payment"

# --------------------------------------------------------------------------- load generator
# Runs in a child process (spawn); everything it needs arrives in `spec`.


def request_for(kind: str, rng: random.Random, spec: dict) -> tuple[str, str, Any, dict]:
    customer_id = rng.choice(spec["customer_ids"])
    sale_body = {
        "customer_id": customer_id,
        "total": rng.randint(100, 20_000),
        "payment_method": rng.choices(["cash", "card", "account"], [60, 25, 15])[0],
    }
    if kind == HELLO_GET:
        return "GET", "/hello", None, {}
    if kind == HELLO_POST:
        return "POST", "/hello", sale_body, {}
    headers = {"Authorization": f"Bearer {spec['token']}", "Idempotency-Key": str(uuid.uuid4())}
    if kind == PAYMENT:
        body = {"type": "credit", "amount": rng.randint(100, 50_000), "description": PAYMENT_NOTE}
        return "POST", f"/api/v1/customers/{customer_id}/ledger", body, headers
    return "POST", "/api/v1/sales", sale_body, headers


def encode(method: str, path: str, body: Any, headers: dict, port: int) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes."""
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send a request, read the whole response: (status, body, server wants to close)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
    status = int(head[0].split()[1])
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    if fields.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    else:
        body = await reader.readexactly(int(fields.get("content-length", 0)))
    return status, body, fields.get("connection") == "close"


async def drive(spec: dict, count: int, seconds: float) -> dict:
    """`count` requests (or until `seconds` pass) over spec['concurrency'] keep-alive
    connections. A minimal raw HTTP/1.1 client: aiohttp's own client costs about as much CPU
    per request as a hello-world server, so with it the baseline measured the client."""
    rng = random.Random(spec["seed"])
    statuses: Counter = Counter()
    failures: list[str] = []
    latencies: list[float] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        try:
            while issued < count and time.perf_counter() < deadline:
                issued += 1
                request = encode(*request_for(spec["kind"], rng, spec), spec["port"])
                t0 = time.perf_counter()
                try:
                    status, body, close = await asyncio.wait_for(
                        exchange(reader, writer, request), 30
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1
                    close = True
                else:
                    statuses[status] += 1
                    if status >= 300 and len(failures) < 3:
                        failures.append(f"{status} {body[:200].decode(errors='replace')}")
                latencies.append(time.perf_counter() - t0)
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "done": len(latencies),
        "elapsed": elapsed,
        "statuses": dict(statuses),
        "failures": failures,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0,
    }


async def _load(spec: dict) -> dict:
    warm = await drive(spec, spec["warmup"], spec["seconds"])  # untimed: connect, caches
    result = await drive(spec, spec["requests"], spec["seconds"])
    result["created"] = warm["statuses"].get(201, 0) + result["statuses"].get(201, 0)
    return result


def load(spec: dict) -> dict:
    return asyncio.run(_load(spec))


# --------------------------------------------------------------------------- servers


async def hello_get(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def hello_post(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"hello": "world", "fields": len(body)}, status=201)


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


def durable_commit_ms(count: int = 200) -> float:
    """Median time of the smallest write transaction on the node's own connection."""
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        with database.atomic():
            database.execute_sql(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('bench_commit', ?)", (str(i),)
            )
        times.append((time.perf_counter() - t0) * 1000)
    database.execute_sql("DELETE FROM meta WHERE key = 'bench_commit'")
    return statistics.median(times)


def check_books(db_path: Path, payments: int, sales: int) -> list[str]:
    """Cached balances equal the sums of their events, and every 201 left exactly one row."""
    conn = sqlite3.connect(db_path)
    problems = []
    bad_ledger = conn.execute(
        "SELECT COUNT(*) FROM customer c WHERE ledger_balance != (SELECT COALESCE(SUM(CASE "
        "type WHEN 'credit' THEN amount ELSE -amount END), 0) FROM ledger_entry "
        "WHERE customer_id = c.id)"
    ).fetchone()[0]
    bad_points = conn.execute(
        "SELECT COUNT(*) FROM customer c WHERE loyalty_points != (SELECT COALESCE(SUM(points), 0) "
        "FROM loyalty_event WHERE customer_id = c.id)"
    ).fetchone()[0]
    paid = conn.execute(
        "SELECT COUNT(*) FROM ledger_entry WHERE description = ?", (PAYMENT_NOTE,)
    ).fetchone()[0]
    sold = conn.execute("SELECT COUNT(*) FROM sale").fetchone()[0]
    conn.close()
    if bad_ledger:
        problems.append(f"{bad_ledger} customers' ledger_balance != sum of their entries")
    if bad_points:
        problems.append(f"{bad_points} customers' loyalty_points != sum of their events")
    if paid != payments:
        problems.append(f"{paid} payment rows for {payments} payment 201s")
    if sold != sales:
        problems.append(f"{sold} sale rows for {sales} sale 201s")
    return problems


# --------------------------------------------------------------------------- report


async def run(args: argparse.Namespace, tmp: Path) -> int:
    config_file = tmp / "empty.toml"  # keep ./shopnode.toml and $SHOPNODE_CONFIG out of it
    config_file.write_text("")
    data_dir = tmp / "data"
    config = load_config(
        config_file, environ={"SHOPNODE_NODE_DATA_DIR": str(data_dir), "SHOPNODE_API_PORT": "0"}
    )
    node_runner, node_port = await serve(create_app(config))
    hello = web.Application()
    hello.router.add_get("/hello", hello_get)
    hello.router.add_post("/hello", hello_post)
    hello_runner, hello_port = await serve(hello)
    print(f"data dir on {filesystem_of(data_dir)}; the node fsyncs every commit (synchronous=FULL)")

    token = tokens.create_token("bench-money")
    with database.atomic():  # one commit for the set-up, through the real domain function
        ids = [
            customers.create_customer({"name": f"Bench Customer {i}", "phone": f"+1555{i:07d}"})[
                "id"
            ]
            for i in range(args.customers)
        ]

    commit_ms = durable_commit_ms()
    print(
        f"a bare durable commit (one row, fsync) on this disk: p50 {commit_ms:.2f} ms, so one "
        f"connection commits at most ~{1000 / commit_ms:,.0f} writes/s"
    )

    modes = [("sequential", 1), (f"{args.concurrency} clients", args.concurrency)]
    results: dict[tuple[str, str], list[dict]] = {}
    created = Counter()
    spawn = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            for round_no in range(args.rounds):
                for mode, concurrency in modes:
                    for kind in SCENARIOS:
                        port = hello_port if kind in (HELLO_GET, HELLO_POST) else node_port
                        spec = {
                            "kind": kind,
                            "port": port,
                            "token": token,
                            "customer_ids": ids,
                            "concurrency": concurrency,
                            "requests": args.requests,
                            "warmup": max(concurrency, 20),
                            "seconds": args.seconds,
                            "seed": round_no * 100 + concurrency,
                        }
                        before = database.execute_sql("SELECT COUNT(*) FROM sale").fetchone()[0]
                        result = await loop.run_in_executor(pool, load, spec)
                        results.setdefault((mode, kind), []).append(result)
                        created[kind] += result["created"]
                        rate = result["done"] / result["elapsed"]
                        print(
                            f"  round {round_no + 1} {mode:>11} {kind:<10} {rate:8,.0f} req/s  "
                            f"({result['done']} in {result['elapsed']:.1f} s"
                            + (f"; {before:,} sales today before it)" if kind == SALE else ")"),
                            flush=True,
                        )
    finally:
        await hello_runner.cleanup()
        await node_runner.cleanup()

    print(
        f"\nMedian over {args.rounds} rounds; each run <= {args.requests} requests or "
        f"{args.seconds:g} s. Ratio = req/s / '{BASELINE}' req/s of the same round and mode."
    )
    rows = []
    errors = []
    for mode, _ in modes:
        for kind in SCENARIOS:
            runs = results[(mode, kind)]
            rates = [r["done"] / r["elapsed"] for r in runs]
            baseline = [r["done"] / r["elapsed"] for r in results[(mode, BASELINE)]]
            ratios = [a / b for a, b in zip(rates, baseline, strict=True)]
            statuses: Counter = Counter()
            for r in runs:
                statuses.update(r["statuses"])
                errors.extend(f"{mode} {kind}: {f}" for f in r["failures"])
            bad = sum(n for status, n in statuses.items() if not str(status).startswith("2"))
            rows.append([
                mode, kind, f"{statistics.median(rates):,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{statistics.median(r['p50_ms'] for r in runs):.2f}",
                f"{statistics.median(r['p99_ms'] for r in runs):.2f}",
                f"{statistics.median(ratios):.2f}", str(bad),
            ])  # fmt: skip
    print(table(
        ["mode", "request", "req/s", "range", "p50 ms", "p99 ms", "ratio", "non-2xx"], rows,
        left=(0, 1),
    ))  # fmt: skip
    print(
        "sale: the receipt number scans every receipt of the day, so sales slow down as the day's\n"
        "count grows (see the per-run lines above: 'N sales today before it')."
    )
    print(f"load average at the end: {load_average()}")
    for line in errors[:6]:
        print("  failure:", line)
    problems = check_books(config.database_path, created[PAYMENT], created[SALE])
    print(
        f"\nbooks after {created[PAYMENT]:,} payments and {created[SALE]:,} sales: "
        + ("; ".join(problems) if problems else "balances and points equal their sums; "
           "one row per 201")
    )  # fmt: skip
    return 1 if problems or errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="max requests per run")
    parser.add_argument("--seconds", type=float, default=5.0, help="max seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients")
    parser.add_argument("--customers", type=int, default=1000, help="customers to pay and sell to")
    parser.add_argument("--dir", help="where to make the temporary data dir (its disk matters)")
    args = parser.parse_args()
    if min(args.requests, args.rounds, args.concurrency, args.customers) < 1 or args.seconds <= 0:
        parser.error("counts and --seconds must be positive")
    print(f"{machine_line()}; load generator: one other process, raw HTTP/1.1")
    with tempfile.TemporaryDirectory(prefix="shopnode-bench-money-", dir=args.dir) as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
