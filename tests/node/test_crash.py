"""SIGKILL a real node while payments stream in: every acknowledged payment must survive."""

from __future__ import annotations

import asyncio
import itertools
import signal

import aiohttp

from tests.node.conftest import all_entries, fetch
from tests.processes import NodeProcess, start_node

WORKERS = 4  # several requests in flight when the kill lands
KILL_AFTER = 60  # acknowledgements


async def test_acknowledged_payments_survive_sigkill(node: NodeProcess):
    async with aiohttp.ClientSession(headers=node.headers) as session:
        status, customer, _ = await fetch(
            session, "POST", f"{node.url}/api/v1/customers", json={"name": "Steady payer"}
        )
        assert status == 201, customer
        ledger_url = f"{node.url}/api/v1/customers/{customer['id']}/ledger"

        attempted: dict[str, int] = {}  # idempotency key -> amount, for every request sent
        acked: dict[str, str] = {}  # idempotency key -> entry id, for every 201 received
        enough = asyncio.Event()
        numbers = itertools.count()

        async def stream() -> None:
            """Send payments one after another until the node dies under us."""
            while True:
                n = next(numbers)
                key, amount = f"payment-{n:05d}", 1000 + n
                attempted[key] = amount
                body = {"type": "credit", "amount": amount, "description": key}
                try:
                    status, entry, _ = await fetch(
                        session, "POST", ledger_url, json=body, headers={"Idempotency-Key": key}
                    )
                except (TimeoutError, aiohttp.ClientError):
                    return
                assert status == 201, entry
                acked[key] = entry["id"]
                if len(acked) >= KILL_AFTER:
                    enough.set()

        async def killer() -> None:
            await enough.wait()
            node.proc.send_signal(signal.SIGKILL)

        await asyncio.wait_for(
            asyncio.gather(killer(), *(stream() for _ in range(WORKERS))), timeout=60
        )
        assert node.proc.wait(10) == -signal.SIGKILL
        assert len(acked) >= KILL_AFTER

    restarted = start_node(node.env, node.log)
    try:
        async with aiohttp.ClientSession(headers=node.headers) as session:
            entries = await all_entries(session, restarted.url, customer["id"])
            by_key = {e["description"]: e for e in entries}
            assert len(by_key) == len(entries), "an entry was recorded twice"

            # Every acknowledged payment is there, with the id the client was given.
            for key, entry_id in acked.items():
                assert key in by_key, f"acknowledged payment {key} was lost"
                assert by_key[key]["id"] == entry_id
            # Anything else is a whole payment the client sent, not a fragment.
            for key, entry in by_key.items():
                assert attempted.get(key) == entry["amount"], entry
                assert entry["type"] == "credit"

            total = sum(e["amount"] for e in entries)
            assert entries[0]["balance_after"] == total
            status, shown, _ = await fetch(
                session, "GET", f"{restarted.url}/api/v1/customers/{customer['id']}"
            )
            assert shown["ledger_balance"] == total

            # The till retries what it never heard back about: each lands exactly once.
            ledger_url = f"{restarted.url}/api/v1/customers/{customer['id']}/ledger"
            for key in sorted(set(attempted) - set(acked)):
                body = {"type": "credit", "amount": attempted[key], "description": key}
                status, entry, _ = await fetch(
                    session, "POST", ledger_url, json=body, headers={"Idempotency-Key": key}
                )
                assert status == 201, entry
                if key in by_key:
                    assert entry["id"] == by_key[key]["id"]
            entries = await all_entries(session, restarted.url, customer["id"])
            assert sorted(e["description"] for e in entries) == sorted(attempted)
            status, shown, _ = await fetch(
                session, "GET", f"{restarted.url}/api/v1/customers/{customer['id']}"
            )
            assert shown["ledger_balance"] == sum(attempted.values())
    finally:
        assert restarted.stop() == 0
