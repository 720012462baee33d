"""The one writer: writes queued while it is busy commit together, each answered after the
commit; a refused write leaves nothing while its group-mates land; a commit that fails
fails its whole group and records nothing; reads are answered while a write is running;
a sync page applied in slices resumes cleanly after a crash between slices."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from node import changes
from node.api.keys import WRITER
from node.db import database, fetch_all, fetch_one, get_meta, marks
from node.writer import write
from sync import worker
from sync.progress import CURSOR
from sync.protocol import CHANGE_FIELDS
from tests.node.conftest import ledger, ledger_path, problem


class HeldWriter:
    """Keeps the writer busy on a job until released, so what is sent meanwhile queues."""

    def __init__(self, api) -> None:
        self.writer = api.client.app[WRITER]
        self.release = threading.Event()
        self.started = threading.Event()
        self.job: asyncio.Future | None = None

    async def __aenter__(self) -> HeldWriter:
        def hold() -> None:
            self.started.set()
            self.release.wait(30)

        self.job = asyncio.ensure_future(self.writer.write(hold))
        await asyncio.get_running_loop().run_in_executor(None, self.started.wait, 30)
        return self

    async def queued(self, count: int) -> None:
        """Wait until `count` writes wait behind the held one."""
        for _ in range(1000):
            if self.writer._queue.qsize() >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {self.writer._queue.qsize()} writes queued")

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()
        await self.job


def pay(api, customer_id: str, amount: int, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else None
    return api.post(ledger_path(customer_id), headers=headers,
                    json={"type": "credit", "amount": amount})  # fmt: skip


async def test_writes_queued_meanwhile_commit_as_one_group_each_answered(api) -> None:
    customer = await api.customer("Asha")
    async with HeldWriter(api) as held:
        groups = held.writer.stats.groups
        requests = [asyncio.ensure_future(pay(api, customer["id"], 100 + n)) for n in range(30)]
        await held.queued(30)
        assert not any(r.done() for r in requests)  # nobody is answered before the commit
    responses = await asyncio.gather(*requests)
    assert [r.status for r in responses] == [201] * 30
    assert held.writer.stats.groups == groups + 2  # the held job's group, then all 30
    entries = await ledger(api, customer["id"])
    assert len(entries) == 30
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == sum(range(100, 130))
    # Each answer's balance_after is its own place in the running balance.
    balances = sorted([(await r.json())["balance_after"] for r in responses])
    assert balances == sorted(e["balance_after"] for e in entries)


async def test_a_refused_write_leaves_nothing_and_its_group_mates_land(api) -> None:
    limited = await api.customer("Bilal", credit_limit=500)
    other = await api.customer("Chen")
    async with HeldWriter(api) as held:
        first = asyncio.ensure_future(pay(api, other["id"], 300))
        refused = asyncio.ensure_future(api.post(ledger_path(limited["id"]),
                                                 json={"type": "debit", "amount": 900}))
        last = asyncio.ensure_future(pay(api, other["id"], 200))
        await held.queued(3)
    assert (await first).status == 201 and (await last).status == 201
    await problem(await refused, 409)
    assert (await api.get_customer(other["id"]))["ledger_balance"] == 500
    assert await ledger(api, limited["id"]) == []
    assert (await api.get_customer(limited["id"]))["ledger_balance"] == 0


async def test_a_commit_that_fails_fails_its_group_and_records_nothing(api) -> None:
    customer = await api.customer("Dara")
    log_before = fetch_one("SELECT COUNT(*) AS n FROM change_log")["n"]

    def dangling_entry() -> None:
        # A foreign key checked only at COMMIT: the group's commit fails (as it would on a
        # full disk), after every write in it ran without error.
        database.execute_sql("PRAGMA defer_foreign_keys = ON")
        database.execute_sql(
            "INSERT INTO ledger_entry(id, customer_id, type, amount, description, created_at) "
            "VALUES (?, ?, 'credit', 1, 'x', '2026-01-01T00:00:00Z')",
            (str(uuid.uuid4()), str(uuid.uuid4())),
        )

    async with HeldWriter(api) as held:
        committed = held.writer.stats.writes
        payment = asyncio.ensure_future(pay(api, customer["id"], 700, key="pay-dara-1"))
        await held.queued(1)
        broken = asyncio.ensure_future(held.writer.write(dangling_entry))
        await held.queued(2)
    body = await problem(await payment, 503)
    assert "nothing was recorded" in body["detail"]
    with pytest.raises(Exception, match="could not be saved"):
        await broken
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 0
    assert fetch_one("SELECT COUNT(*) AS n FROM change_log")["n"] == log_before
    assert held.writer.stats.writes == committed + 1  # the held job only: /metrics agrees
    # The same request again, with its key: recorded once.
    retried = await pay(api, customer["id"], 700, key="pay-dara-1")
    assert retried.status == 201 and "Idempotent-Replayed" not in retried.headers
    assert (await api.get_customer(customer["id"]))["ledger_balance"] == 700


async def test_reads_are_answered_while_a_write_runs(api) -> None:
    customer = await api.customer("Esi")
    async with HeldWriter(api):
        # The writer is busy (a commit, an fsync, a sync slice): the shop still reads.
        assert (await api.get_customer(customer["id"]))["name"] == "Esi"
        found = await api.ok("GET", "/api/v1/customers?search=Esi")
        assert [c["id"] for c in found] == [customer["id"]]
        payment = asyncio.ensure_future(pay(api, customer["id"], 50))
        await asyncio.sleep(0.05)
        assert not payment.done()  # writes wait for the writer
    assert (await payment).status == 201


async def test_a_page_applied_in_slices_resumes_after_a_crash_between_slices(
    api, monkeypatch
) -> None:
    """Inside serve a pulled page goes in slices, the cursor with the last one. A crash
    after some slices leaves them applied and the cursor where it was; pulling the page
    again applies the rest and nothing twice."""
    # Seven customers as another shop would send them: made here, then taken back out.
    created = [await api.customer(f"Remote {n}") for n in range(1, 8)]
    ids = [c["id"] for c in created]
    page = [dict(row) for row in fetch_all(
        f"SELECT {', '.join(CHANGE_FIELDS)} FROM change_log WHERE entity_id IN ({marks(ids)}) "
        "ORDER BY origin_seq", ids)]  # fmt: skip
    origin = str(uuid.uuid4())
    for seq, change in enumerate(page, start=1):
        change.update(origin=origin, origin_seq=seq)

    def forget() -> None:
        for table, column in (("customer_field_clock", "customer_id"), ("customer", "id"),
                              ("change_log", "entity_id")):  # fmt: skip
            database.execute_sql(f"DELETE FROM {table} WHERE {column} IN ({marks(ids)})", ids)

    await write(forget)
    monkeypatch.setattr(worker, "APPLY_SLICE", 3)
    calls = []
    real = worker.apply_changes

    def crash_on_third_slice(part: list, my_origin: str, *checked: Any) -> tuple[int, int]:
        calls.append(len(part))
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real(part, my_origin, *checked)

    monkeypatch.setattr(worker, "apply_changes", crash_on_third_slice)
    me = changes.origin_id()
    with pytest.raises(RuntimeError):
        await worker.apply_in_slices(page, 7, page[-1]["id"], me, "")
    assert calls == [3, 3, 1]  # the last slice, with the cursor, rolled back
    assert get_meta(CURSOR) in (None, "0")
    listed = await api.ok("GET", "/api/v1/customers?limit=100")
    assert sorted(c["name"] for c in listed) == [f"Remote {n}" for n in range(1, 7)]

    monkeypatch.setattr(worker, "apply_changes", real)
    assert await worker.apply_in_slices(page, 7, page[-1]["id"], me, "") == (1, 0)
    assert get_meta(CURSOR) == "7"
    listed = await api.ok("GET", "/api/v1/customers?limit=100")
    assert sorted(c["name"] for c in listed) == [f"Remote {n}" for n in range(1, 8)]
