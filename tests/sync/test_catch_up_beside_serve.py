"""`shopnode sync` catching up on a shop while its `serve` takes payments at the till."""

from __future__ import annotations

import pytest

from sync.worker import COMMIT_SECONDS
from tests.conftest import call, pay_while_running
from tests.processes import shopnode, spawn
from tests.sync.conftest import post, synced


@pytest.mark.parametrize("central_database", ["sqlite"], indirect=True)
def test_a_payment_at_the_till_is_not_refused_while_shopnode_sync_catches_up(shops, tmp_path):
    """The catch-up commits at least every COMMIT_SECONDS so that serve's writes wait that
    long at most; it must also let a waiting write have the lock between its transactions,
    not take it straight back (a payment then waited through transaction after transaction
    and was refused with 503, database is locked, once past serve's 5 s busy_timeout)."""
    source = shops.start("source")
    rows = "".join(f"Customer {n:06d},c{n}@example.com\n" for n in range(120_000))
    (tmp_path / "many.csv").write_text("name,email\n" + rows)
    imported = shopnode("import", "customers", str(tmp_path / "many.csv"), env=source.env,
                        timeout=600)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    synced(source)

    # The shop's own serve does not sync (no central there): `shopnode sync` catches it up.
    shop = shops.start("shop", central_url="http://127.0.0.1:9")
    payer = post(shop, "/api/v1/customers", {"name": "Payer"})
    env = {**shop.env, "SHOPNODE_SYNC_CENTRAL_URL": shops.central.url}
    catching_up = spawn("sync", env=env, log=tmp_path / "sync.log", out=tmp_path / "sync.out")
    answers = pay_while_running(shop, payer["id"], catching_up)
    assert catching_up.wait(60) == 0, (tmp_path / "sync.log").read_text()
    assert "pulled 120000" in (tmp_path / "sync.out").read_text()
    refused = [(status, body) for status, _, body in answers if status != 201]
    assert not refused
    waits = sorted(seconds for _, seconds, _ in answers)
    assert waits[-1] < 2 * COMMIT_SECONDS, waits[-5:]  # one transaction, not several
    balance = call(shop, "GET", f"/api/v1/customers/{payer['id']}")[1]["ledger_balance"]
    assert balance == len(answers)
