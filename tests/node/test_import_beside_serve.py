"""A large `shopnode import customers` while the shop's `serve` takes payments at the till."""

from __future__ import annotations

from node.csvio import BATCH_SECONDS
from tests.conftest import call, pay_while_running
from tests.processes import spawn


def test_a_payment_at_the_till_waits_for_one_import_batch_not_several(node, tmp_path):
    """Each import batch holds the write lock ~BATCH_SECONDS so that serve's writes wait
    about that long; the import must also let a waiting write have the lock between its
    batches, not take it straight back (a payment waited through batch after batch: 2.5-3.8
    s on 150k-300k rows, and past serve's 5 s busy_timeout it is refused with 503)."""
    rows = "".join(f"Customer {n:06d},c{n}@example.com\n" for n in range(150_000))
    (tmp_path / "many.csv").write_text("name,email\n" + rows)
    status, payer = call(node, "POST", "/api/v1/customers", {"name": "Payer"})
    assert status == 201, payer
    importing = spawn("import", "customers", str(tmp_path / "many.csv"), env=node.env,
                      log=tmp_path / "import.log", out=tmp_path / "import.out")  # fmt: skip
    answers = pay_while_running(node, payer["id"], importing)
    assert importing.wait(60) == 0, (tmp_path / "import.log").read_text()
    assert "imported 150000" in (tmp_path / "import.out").read_text()
    assert not [(status, body) for status, _, body in answers if status != 201]
    waits = sorted(seconds for _, seconds, _ in answers)
    assert waits[-1] < 4 * BATCH_SECONDS, waits[-5:]  # about one batch, not several
    balance = call(node, "GET", f"/api/v1/customers/{payer['id']}")[1]["ledger_balance"]
    assert balance == len(answers)
