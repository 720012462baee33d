"""`shopnode sync` catches up several pages to a transaction, on a thread of its own
(sync.worker.CatchUp): every change once, the cursor always with the pages it covers, and a
round that fails half way keeps the transactions committed before it and nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from node import customers, db, ledger, sales, settings, verify
from sync import merge, worker
from sync.progress import CURSOR
from sync.store import CentralStore

PAGE = 5  # changes a pull brings
PAGES_PER_COMMIT = 3


class Direct:
    """The wire protocol without HTTP: central's store, called in this process."""

    def __init__(self, central: CentralStore, store: str) -> None:
        self.central, self.store = central, store

    async def push(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.central.push(self.store, payload["origin"], payload["changes"],
                                 payload.get("acked"), payload.get("epoch"))  # fmt: skip

    async def pull(self, after: int, limit: int, origin: str, after_id: str,
                   epoch: str) -> dict[str, Any]:  # fmt: skip
        return self.central.pull(after, limit, origin, after_id, epoch)


def use(tmp: Path, name: str) -> None:
    if db.database.obj is not None:
        db.database.close()
    db.open_database(tmp / f"{name}.db")
    settings.seed_settings({"earn_rate": 1, "point_value": 10, "currency": "USD",
                            "default_credit_limit": None})  # fmt: skip


def books() -> tuple[int, list[tuple]]:
    logged = db.fetch_one("SELECT COUNT(*) AS n FROM change_log")["n"]
    balances = db.fetch_all("SELECT id, ledger_balance, loyalty_points, total_spent, "
                            "total_orders FROM customer ORDER BY id")  # fmt: skip
    return logged, [tuple(row.values()) for row in balances]


@pytest.fixture
def central(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(worker, "PULL_PAGE", PAGE)
    monkeypatch.setattr(worker, "COMMIT_CHANGES", PAGE * PAGES_PER_COMMIT)
    monkeypatch.setattr(worker, "COMMIT_SECONDS", 3600.0)
    store = CentralStore(f"sqlite:///{tmp_path / 'central.db'}")
    yield store
    if db.database.obj is not None:
        db.database.close()
    store.close()


def shop_with_history(tmp: Path, central: CentralStore) -> tuple[int, list[tuple]]:
    """Shop A: customers, payments and sales on account (48 changes), pushed; its books."""
    use(tmp, "a")
    for n in range(8):
        cid = customers.create_customer({"name": f"Customer {n}"})["id"]
        for amount in (500, 700):
            sales.record_sale(cid, amount, "account")
            ledger.record_entry(cid, "credit", amount, None)
        ledger.record_entry(cid, "debit", 100 + n, None)
    asyncio.run(worker.sync_round(Direct(central, central.add_store("a")["store_id"])))
    return books()


def test_a_catch_up_applies_every_change_once(tmp_path: Path, central: CentralStore):
    expected = shop_with_history(tmp_path, central)
    use(tmp_path, "b")
    transport = Direct(central, central.add_store("b")["store_id"])
    result = asyncio.run(worker.sync_round(transport, catch_up=True))
    assert (result.pulled, result.applied, result.conflicts) == (48, 48, 0)
    assert books() == expected
    assert verify.differences() == []
    again = asyncio.run(worker.sync_round(transport, catch_up=True))
    assert (again.pulled, again.applied) == (0, 0)
    assert books() == expected


def test_a_catch_up_that_fails_keeps_only_whole_transactions(
    tmp_path: Path, central: CentralStore, monkeypatch: pytest.MonkeyPatch
):
    expected = shop_with_history(tmp_path, central)
    use(tmp_path, "b")
    transport = Direct(central, central.add_store("b")["store_id"])
    real, seen = merge.apply_change, []

    def failing(change: dict[str, Any], my_origin: str) -> str:
        seen.append(change["id"])
        if len(seen) == 2 * PAGE * PAGES_PER_COMMIT - 2:  # in the 3rd transaction's last page
            raise OSError("disk went away")
        return real(change, my_origin)

    monkeypatch.setattr(merge, "apply_change", failing)
    with pytest.raises(OSError):
        asyncio.run(worker.sync_round(transport, catch_up=True))
    # Transactions of 1 page, then 2, then 3 (the most): the first two and their cursor
    # stay, nothing of the third.
    held, _ = books()
    assert held == PAGE * 3
    cursor = int(db.get_meta(CURSOR) or 0)
    assert db.fetch_one("SELECT COUNT(*) AS n FROM change_log")["n"] == held
    assert central.pull(0, held, "another origin")["next"] == cursor
    assert verify.differences() == []

    monkeypatch.setattr(merge, "apply_change", real)
    result = asyncio.run(worker.sync_round(transport, catch_up=True))
    assert result.applied == 48 - held
    assert books() == expected
    assert verify.differences() == []
