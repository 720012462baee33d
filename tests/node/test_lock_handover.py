"""A long run of transactions (import, catch-up) and another writer waiting for the lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from node import db
from node.db import database, hand_over_lock, lock_file, open_database, shop_database

PAY = """
import sys, time
from pathlib import Path
from node.db import shop_database
other = shop_database(Path(sys.argv[1]))
other.connect()
print("ready", flush=True)
sys.stdin.readline()  # the run holds the lock
started = time.monotonic()
with other.atomic():
    other.execute_sql("INSERT INTO meta(key, value) VALUES ('paid', '1')")
print(time.monotonic() - started, flush=True)
"""


@pytest.mark.parametrize("lock_file_there", [True, False])
def test_a_waiting_writer_gets_the_lock_at_the_next_hand_over(tmp_path, lock_file_there):
    """Transactions back to back, each holding the lock 0.2 s, while another program (serve
    taking a payment) waits for it: without being told, each BEGIN IMMEDIATE a moment after a
    COMMIT wins over SQLite's busy handler (which looks every 100 ms at most), and the payment
    waits until the run ends (here 4 s)."""
    path = tmp_path / "shop.db"
    if lock_file_there:  # else removed by hand: the waiting writer makes it again
        lock_file(path).touch()
    open_database(path)
    payer = subprocess.Popen([sys.executable, "-c", PAY, str(path)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             cwd=Path(__file__).parents[2])  # fmt: skip
    assert payer.stdout.readline() == "ready\n"
    until = time.monotonic() + 4
    while payer.poll() is None and time.monotonic() < until:
        with database.atomic():
            if not payer.stdin.closed:
                payer.stdin.close()  # go: pay now
            time.sleep(0.2)
        hand_over_lock()
    with payer.stdout:
        waited = float(payer.stdout.read())
    payer.wait(10)
    assert waited < 1.0, f"the payment waited {waited:.1f} s"
    assert db.get_meta("paid") == "1"


def test_with_nobody_waiting_the_run_does_not_pause(tmp_path, monkeypatch):
    path = tmp_path / "shop.db"
    lock_file(path).touch()
    open_database(path)
    pauses = []
    monkeypatch.setattr(db.time, "sleep", pauses.append)
    for _ in range(5):
        with database.atomic():
            db.set_meta("batch", "done")
        hand_over_lock()
    assert pauses == []
    other = shop_database(path)  # a writer that did not have to wait says nothing either
    with other.atomic():
        other.execute_sql("INSERT INTO meta(key, value) VALUES ('paid', '1')")
    other.close()
    hand_over_lock()
    assert pauses == []
