"""What the benchmark scripts share: the machine line, aligned tables, percentiles, the
filesystem under a path, and the child processes a script started (stopped on the way out).

The scripts put the checkout on sys.path before importing this as `bench.common`.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests import processes

# --------------------------------------------------------------------------- the machine


# Issue 12's floors for central ingest over a raw batched insert into the same engine.
INGEST_TARGETS = {"sqlite": 0.6, "postgresql": 0.8}

def machine_line() -> str:
    """Versions, CPUs and the load average now: figures mean little without them."""
    return (
        f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"aiohttp {aiohttp.__version__}, {os.cpu_count()} CPUs{cpu_model()}, load average "
        f"{load_average()}"
    )


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return f" ({found.group(1).strip()})" if found else ""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def filesystem_of(path: Path) -> str:
    """The mount (and its type) holding `path`: fsync cost depends on it."""
    best = ("?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _, point, kind, *_ = line.split()
                if str(path).startswith(point) and len(point) >= len(best[0]):
                    best = (point, kind)
    except OSError:
        pass
    return f"{best[1]} (mounted at {best[0]})"


# --------------------------------------------------------------------------- figures


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """Aligned text columns: the `left` ones left-aligned, the rest (figures) right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i in left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --------------------------------------------------------------------------- processes


def proc_status_kb(pid: int, key: str) -> int:
    """A `/proc/PID/status` figure in kB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def vm_hwm_kb(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory."""
    return proc_status_kb(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Every child a script starts is listed here until it is stopped, so that a failure or
# Ctrl-C anywhere leaves none behind (the scripts call stop_all in a `finally`).
PROCS: list[subprocess.Popen] = []


def stop(proc: subprocess.Popen, wait: float = 30) -> None:
    processes.stop(proc, timeout=wait)  # SIGTERM, then SIGKILL after `wait` seconds
    if proc in PROCS:
        PROCS.remove(proc)


def stop_all() -> None:
    for proc in list(PROCS):
        try:
            stop(proc, 10)
        except Exception:  # noqa: BLE001 - best effort on the way out
            proc.kill()
