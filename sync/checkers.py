"""Central's checker processes: a large push is read and checked (sync/protocol.py
checked_push) in one of them, so the checks of several pushes run on other cores than the
event loop's. Central is bound by its one Python thread (the GIL): checking was ~60% of it
under bench/sync.py's ingest load (6 stores pushing batches of 500).

A checker imports this module and sync/protocol.py alone, and shares nothing with the server
but the body it is given and the checked batch (or the refusal) it returns.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sync.protocol import Checked, Refused, checked_push

# A push body of at least this many bytes (~30 changes) is checked in a checker process;
# at most this many of them (one a CPU).
POOLED_CHECK_BYTES = 16 * 1024
MAX_CHECKERS = 4

log = logging.getLogger("shopnode.central")


class Checkers:
    """Processes that check pushed changes (spawned: they share nothing with the server but
    what checked_push is given and returns); a pool whose process died is replaced."""

    def __init__(self) -> None:
        self.pool = self._new_pool()
        self.pool.submit(int)  # they start while central opens its database

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(min(MAX_CHECKERS, os.cpu_count() or 1),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_started, initargs=(os.getpid(),))  # fmt: skip

    async def check(self, raw: bytes) -> Checked | Refused:
        """checked_push, in a checker process when the body is large enough to pay for the
        trip (a shop's push between two sales is checked here, in well under a millisecond);
        here too when a checker died."""
        if len(raw) < POOLED_CHECK_BYTES:
            return checked_push(raw)
        pool = self.pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, checked_push, raw)
        except BrokenProcessPool:
            if pool is self.pool:
                log.warning("a push checker process died; starting new ones")
                pool.shutdown(wait=False)
                self.pool = self._new_pool()
            return checked_push(raw)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _started(server: int) -> None:
    """In a checker: Ctrl-C is the server's to handle (it stops its checkers), and a checker
    ends with its server, even one killed outright."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with, args=(server,), name="end-with-server",
                     daemon=True).start()  # fmt: skip


def _end_with(server: int) -> None:
    while os.getppid() == server:
        time.sleep(1)
    os._exit(0)
