"""A shop restored from its backup with `shopnode restore` gets back from central what it
recorded after the backup, each once, and goes on syncing as a new origin.

Real processes: central, two shops, the CLI. Every test here runs twice: central on SQLite
and central on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import call
from tests.processes import NodeProcess, shopnode
from tests.sync.conftest import Shops, get, post, synced
from tests.sync.faults import start_shops


def money_view(node: NodeProcess, customer_id: str) -> tuple:
    c = get(node, f"/api/v1/customers/{customer_id}")
    return c["ledger_balance"], c["loyalty_points"], c["total_spent"], c["total_orders"]


def books(node: NodeProcess, customer_id: str) -> tuple:
    """Everything of a customer's money a user can see: totals, ledger, sales."""
    entries = get(node, f"/api/v1/customers/{customer_id}/ledger?limit=100")
    sales = get(node, f"/api/v1/customers/{customer_id}/sales?limit=100")
    return (
        money_view(node, customer_id),
        sorted((e["id"], e["amount"], e["balance_after"]) for e in entries),
        sorted((s["id"], s["receipt_number"], s["refunded_amount"]) for s in sales),
    )


def restart(node: NodeProcess) -> None:
    """Start a stopped shop again, then a sync round (after the one it starts with)."""
    node.restart()
    synced(node)


def test_a_restored_shop_gets_back_its_later_sales_from_central(shops: Shops, tmp_path: Path):
    a, b = start_shops(shops, "shop-a", "shop-b")
    ravi = post(a, "/api/v1/customers", {"name": "Ravi"})["id"]
    post(a, "/api/v1/sales", {"customer_id": ravi, "total": 4000, "payment_method": "account"})
    synced(a)
    backup = tmp_path / "shop-a-backup.db"
    assert shopnode("backup", str(backup), env=a.env).returncode == 0

    # After the backup: sales, a payment, a refund, a new customer, all synced.
    sale = post(a, "/api/v1/sales", {"customer_id": ravi, "total": 15000,
                                     "payment_method": "account"})  # fmt: skip
    post(a, f"/api/v1/sales/{sale['id']}/refund", {"amount": 5000})
    post(a, f"/api/v1/customers/{ravi}/ledger", {"type": "credit", "amount": 3000})
    post(a, "/api/v1/sales", {"customer_id": ravi, "total": 2500, "payment_method": "cash"})
    sita = post(a, "/api/v1/customers", {"name": "Sita"})["id"]
    synced(a, b)
    before = books(a, ravi)
    assert before[0] == (-11000, 165, 16500, 3)
    origin = get(a, "/api/v1/sync/status")["origin"]

    assert a.stop() == 0
    restored = shopnode("restore", str(backup), env=a.env)
    assert restored.returncode == 0, restored.stderr
    restart(a)

    # Everything recorded after the backup is back, once; the shop writes as a new origin.
    assert books(a, ravi) == before
    assert get(a, f"/api/v1/customers/{sita}")["name"] == "Sita"
    status = get(a, "/api/v1/sync/status")
    assert status["origin"] != origin and status["reports"] == {}
    verified = shopnode("verify", env=a.env)
    assert verified.returncode == 0, verified.stdout

    # New sales after the restore reach the other shop exactly once, like the old ones.
    new = post(a, "/api/v1/sales", {"customer_id": ravi, "total": 1000,
                                    "payment_method": "account"})  # fmt: skip
    assert new["receipt_number"] not in {s[1] for s in before[2]}
    synced(a, b, a)
    assert books(a, ravi) == books(b, ravi)
    assert money_view(b, ravi) == (-12000, 175, 17500, 4)
    assert get(b, "/api/v1/sync/status")["reports"] == {}


def test_a_sale_never_sent_before_the_backup_reaches_central_after_a_restore(
    shops: Shops, tmp_path: Path
):
    """The shop's machine died: its last backup holds a sale central never got. Restored on
    a new machine (no database there yet), the shop sends it under its old origin."""
    a, b = start_shops(shops, "shop-a", "shop-b")
    mina = post(a, "/api/v1/customers", {"name": "Mina"})["id"]
    synced(a, b)
    post(a, "/api/v1/sales", {"customer_id": mina, "total": 7000, "payment_method": "account"})
    backup = tmp_path / "last-backup.db"
    assert shopnode("backup", str(backup), env=a.env).returncode == 0
    a.stop()

    new_machine = tmp_path / "new-machine"
    a.env["SHOPNODE_NODE_DATA_DIR"] = str(new_machine)
    restored = shopnode("restore", str(backup), env=a.env)
    assert restored.returncode == 0, restored.stderr
    assert "kept as" not in restored.stdout  # there was nothing to move aside
    restart(a)
    synced(b)
    assert money_view(b, mina) == money_view(a, mina) == (-7000, 70, 7000, 1)
    assert call(b, "GET", f"/api/v1/customers/{mina}/sales")[1][0]["total"] == 7000
