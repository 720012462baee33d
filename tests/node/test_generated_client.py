"""A client generated from the served OpenAPI document works against a real node.

openapi-python-client (the `test` extra) turns /api/v1/openapi.json into a Python package
whose functions are named by operationId and grouped by tag, offline, in a second or two;
a shop's integration then reads like the shop: create a customer, a sale on account, a
payment, a search.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.processes import NodeProcess

PACKAGE = "shopnode_client"


def generate(document: dict[str, Any], where: Path) -> Path:
    """Generate the client package from `document` into `where`; its directory."""
    (where / "openapi.json").write_text(json.dumps(document))
    # No post hooks: the generator would otherwise look for ruff on PATH to format its output.
    (where / "generator.yaml").write_text("post_hooks: []\n")
    package = where / PACKAGE
    run = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate",
         "--path", str(where / "openapi.json"), "--config", str(where / "generator.yaml"),
         "--meta", "none", "--output-path", str(package)],
        capture_output=True, text=True, timeout=120, cwd=where,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    # Anything it could not turn into code is a warning, which means the document is unclear.
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr
    return package


@pytest.fixture
def client_package(node: NodeProcess, tmp_path: Path) -> Iterator[ModuleType]:
    """The client generated from the document `node` serves, importable for this test."""
    with urllib.request.urlopen(f"{node.url}/api/v1/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    generate(document, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_a_generated_client_runs_a_shop_day(node: NodeProcess, client_package) -> None:
    customers = module(client_package, "api.customers")
    names = {"create_customer", "list_customers", "update_customer", "delete_customer"}
    assert names <= {info.name for info in pkgutil.iter_modules(customers.__path__)}
    create_customer = module(client_package, "api.customers.create_customer")
    list_customers = module(client_package, "api.customers.list_customers")
    record_sale = module(client_package, "api.sales.record_sale")
    record_payment = module(client_package, "api.ledger.record_payment_or_debit")
    list_entries = module(client_package, "api.ledger.list_ledger_entries")
    models = module(client_package, "models")

    assert node.token
    client = client_package.AuthenticatedClient(base_url=node.url, token=node.token)
    with client:
        asha = create_customer.sync(client=client, body=models.CustomerInput(
            name="Asha Rao", phone="+91 98200 11111", email="asha@example.com",
            tags=["wholesale"]))  # fmt: skip
        assert isinstance(asha, models.Customer), asha
        assert asha.phone == "+919820011111" and asha.ledger_balance == 0

        on_account = models.SaleInput(
            customer_id=asha.id, total=12550, payment_method=models.SaleInputPaymentMethod.ACCOUNT
        )
        sale = record_sale.sync(client=client, body=on_account, idempotency_key="till-1-sale-1")
        assert isinstance(sale, models.Sale), sale
        assert sale.receipt_number.startswith("REC-") and sale.points_earned == 125

        payment = record_payment.sync(asha.id, client=client, body=models.LedgerEntryInput(
            type_=models.LedgerEntryInputType.CREDIT, amount=5000,
            description="Cash at the counter"))  # fmt: skip
        assert isinstance(payment, models.LedgerEntry), payment
        assert payment.balance_after == 12550 * -1 + 5000

        found = list_customers.sync(client=client, search="98200 111")
        assert [c.name for c in found] == ["Asha Rao"]
        assert found[0].ledger_balance == -7550 and found[0].loyalty_points == 125
        entries = list_entries.sync(asha.id, client=client)
        assert [e.type_.value for e in entries] == ["credit", "debit"]

        # A refused request comes back as the document's Problem, naming the field.
        refused = create_customer.sync_detailed(
            client=client, body=models.CustomerInput(name="Ravi", email="not-an-email"))
        assert refused.status_code == 422
        assert isinstance(refused.parsed, models.Problem)
        assert [e.field for e in refused.parsed.errors] == ["email"]
