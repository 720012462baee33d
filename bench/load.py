"""The load generator of bench/run.py: one process, aiohttp client, keep-alive connections.

It runs in a process of its own so that it never takes the server's GIL. It reads a JSON
spec from the file it is given, sends requests from each group's connections for `warmup`
seconds (not counted) and then for `seconds` seconds (counted), or until SIGTERM, and prints
one JSON object on stdout: per group the requests done, req/s, latency percentiles, statuses and the
first failed bodies, plus the CPU this process and the watched processes used meanwhile.

Spec:
    {"base": "http://127.0.0.1:8080", "warmup": 1, "seconds": 5, "seed": 1,
     "watch": {"node": 1234},                       # pids whose CPU use is reported
     "started_file": "/tmp/x",                      # touched when the counted part starts
     "groups": [{"name": "GET", "connections": 32, "method": "GET",
                 "paths": ["/api/v1/customers/..."],  # one is picked at random per request
                 "headers": {"Authorization": "Bearer ..."},
                 "body": null,                         # JSON sent with every request
                 "idempotency_key": false,             # a new Idempotency-Key per request
                 "rate": null}]}                       # open loop: requests/s offered

A group without a rate is a closed loop: each connection sends its next request when the last
answer is read. A group with a rate is an open loop (as wrk2 does): requests come due at that
rate on average (Poisson arrivals) whatever the answers take, go out on a free connection of
the group's pool, and each one's latency counts from when it was due, so a stall delays every
request due meanwhile and shows in the percentiles (no "coordinated omission").

Run: python bench/load.py spec.json   (bench/run.py starts it through `Load`, below)
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a clean checkout without installing the package
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.common import PROCS, cpu_seconds  # noqa: E402
from tests import processes  # noqa: E402

TIMEOUT = 30.0  # seconds one request may take before it counts as failed


def ok(status: int | str) -> bool:
    """A 2xx answer (a failed connection counts by the exception's name)."""
    return isinstance(status, int) and 200 <= status < 300


@dataclass
class Tally:
    """What one group's connections saw in the counted phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)  # X-Total-Count of list answers

    def report(self, elapsed: float) -> dict[str, Any]:
        ms = sorted(x * 1000 for x in self.latencies)

        def pct(p: float) -> float:
            return ms[min(len(ms) - 1, int(p / 100 * len(ms)))] if ms else 0.0

        return {
            "done": len(ms),
            "rate": len(ms) / elapsed if elapsed else 0.0,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": ms[-1] if ms else 0.0,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "non_2xx": sum(v for k, v in self.statuses.items() if not ok(k)),
            "failures": self.failures,
            "matches_p50": statistics.median(self.totals) if self.totals else None,
        }


class Sender:
    """One group's requests: the next one's path, headers and body; send it, tally it."""

    def __init__(self, http: aiohttp.ClientSession, group: dict[str, Any],
                 rng: random.Random) -> None:  # fmt: skip
        self.http, self.group, self.rng = http, group, rng
        self.body = json.dumps(group["body"]).encode() if group.get("body") is not None else None
        self.headers = dict(group.get("headers", {}))
        if self.body is not None:
            self.headers["Content-Type"] = "application/json"

    async def send(self, due: float, tally: Tally | None) -> None:
        """One request, its whole answer; its latency counted from `due`."""
        headers = self.headers
        if self.group.get("idempotency_key"):
            headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
        path = self.rng.choice(self.group["paths"])
        try:
            async with self.http.request(self.group["method"], path, data=self.body,
                                         headers=headers) as answer:  # fmt: skip
                content = await answer.read()
                status = answer.status
                total = answer.headers.get("X-Total-Count")
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, content, total = type(exc).__name__, b"", None
        if tally is None:
            return
        tally.latencies.append(time.perf_counter() - due)
        tally.statuses[status] += 1
        if not ok(status) and len(tally.failures) < 3:
            tally.failures.append(f"{status} {content[:300].decode(errors='replace')}")
        if total is not None and total.isdigit():
            tally.totals.append(int(total))


async def closed_loop(sender: Sender, until: float, stopping: asyncio.Event,
                      tally: Tally | None) -> None:  # fmt: skip
    """One connection: a request, its whole answer, the next."""
    while time.perf_counter() < until and not stopping.is_set():
        await sender.send(time.perf_counter(), tally)


async def open_loop(sender: Sender, rate: float, until: float, stopping: asyncio.Event,
                    tally: Tally | None) -> None:  # fmt: skip
    """Requests due at `rate` per second on average, each sent when due on a free connection
    of the group's pool (queued in the pool while all are busy); waits for the last answers."""
    pending: set[asyncio.Task] = set()
    due = time.perf_counter()
    while not stopping.is_set():
        due += sender.rng.expovariate(rate)
        if due >= until:
            break
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(sender.send(due, tally))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)


async def phase(
    sessions: list[aiohttp.ClientSession],
    spec: dict[str, Any],
    seconds: float,
    stopping: asyncio.Event,
    count: bool,
) -> tuple[dict[str, Tally], float]:
    """Every group's connections for `seconds` (or until stopped); the tallies, elapsed s."""
    rng = random.Random(spec.get("seed", 1))
    tallies = {g["name"]: Tally() for g in spec["groups"]}
    start = time.perf_counter()
    until = start + seconds
    loops = []
    for http, group in zip(sessions, spec["groups"], strict=True):
        tally = tallies[group["name"]] if count else None
        if group.get("rate"):
            sender = Sender(http, group, random.Random(rng.random()))
            loops.append(open_loop(sender, group["rate"], until, stopping, tally))
        else:
            senders = [Sender(http, group, random.Random(rng.random()))
                       for _ in range(group["connections"])]  # fmt: skip
            loops += [closed_loop(sender, until, stopping, tally) for sender in senders]
    await asyncio.gather(*loops)
    return tallies, time.perf_counter() - start


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    sessions = [
        aiohttp.ClientSession(
            spec["base"], timeout=timeout, connector=aiohttp.TCPConnector(limit=g["connections"])
        )
        for g in spec["groups"]
    ]
    try:
        if spec.get("warmup", 0) > 0:  # connect, fill caches; not counted
            await phase(sessions, spec, spec["warmup"], stopping, count=False)
        if spec.get("started_file"):  # the parent may stop us from now on
            Path(spec["started_file"]).touch()
        watch = spec.get("watch", {})
        before = {name: cpu_seconds(pid) for name, pid in watch.items()}
        mine = own_cpu()
        tallies, elapsed = await phase(sessions, spec, spec["seconds"], stopping, count=True)
        # Counted: a SIGTERM from now on (the parent's stop crossing our own end) must not
        # kill us before the figures are out, once asyncio has put back the default action.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        return {
            "elapsed": elapsed,
            "stopped_early": stopping.is_set(),
            "client_cpu": (own_cpu() - mine) / elapsed,
            "watch_cpu": {n: (cpu_seconds(p) - before[n]) / elapsed for n, p in watch.items()},
            "groups": {
                g["name"]: {**tallies[g["name"]].report(elapsed), "connections": g["connections"],
                            "offered": g.get("rate")}
                for g in spec["groups"]
            },
        }
    finally:
        for http in sessions:
            await http.close()


# --------------------------------------------------------------------------- the parent's side


class Load:
    """This script in a process of its own: give it a spec, stop it early, read its figures."""

    def __init__(self, tmp: Path, base: str, groups: list[dict[str, Any]], seconds: float,
                 warmup: float, watch: dict[str, int]) -> None:  # fmt: skip
        spec = {"base": base, "groups": groups, "seconds": seconds, "warmup": warmup,
                "watch": watch}  # fmt: skip
        self.err, path = tmp / "load.log", tmp / "load-spec.json"
        self.started = tmp / "load-started"
        self.started.unlink(missing_ok=True)
        path.write_text(json.dumps({**spec, "started_file": str(self.started)}))
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, str(path)],
                                         stdout=subprocess.PIPE, stderr=err,
                                         env=processes.child_env())  # fmt: skip
        PROCS.append(self.proc)
        self.deadline = time.monotonic() + warmup + seconds + 60

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_counting(self) -> None:
        """Until the counted part has started (before it, SIGTERM would kill it unheard)."""
        while self.running() and not self.started.exists() and time.monotonic() < self.deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        """End the counted part now (the figures so far are kept)."""
        self.wait_counting()
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def result(self) -> dict[str, Any]:
        out = self.proc.communicate(timeout=max(1.0, self.deadline - time.monotonic()))[0]
        PROCS.remove(self.proc)
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"bench/load.py failed (exit {self.proc.returncode}): "
                f"{self.err.read_text()[-2000:]}"
            )
        return json.loads(out)


def group(name: str, connections: int, method: str, paths: list[str],
          headers: dict[str, str] | None = None, body: Any = None,
          rate: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A group of the spec; a POST gets a new Idempotency-Key per request; with a `rate`,
    an open loop offering that many requests per second over `connections` connections."""
    return {"name": name, "connections": connections, "method": method, "paths": paths,
            "headers": headers or {}, "body": body, "idempotency_key": method == "POST",
            "rate": rate}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(Path(sys.argv[1]).read_text())))))
