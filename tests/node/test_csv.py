"""CSV import and export through the CLI, as an operator runs them."""

from __future__ import annotations

import csv

from tests.conftest import call
from tests.processes import shopnode


def test_import_reports_bad_rows_and_never_imports_twice(node, tmp_path):
    source = tmp_path / "customers.csv"
    source.write_text(
        "name,email,phone,tags,credit_limit\n"
        "Asha Rao,asha@example.com,+91 98200 11111,vip;wholesale,50000\n"
        ",nobody@example.com,,,\n"
        "Ravi,not-an-email,,,\n"
        "Ravi,,,,\n"
        "Ravi,,,,\n"
        "Big Limit,,,,lots\n"
    )
    first = shopnode("import", "customers", str(source), env=node.env)
    assert first.returncode == 1  # some rows were rejected
    assert "imported 3, already present 0, rejected 3" in first.stdout
    assert "row 3: rejected" in first.stderr and "row 4: rejected" in first.stderr
    assert "row 7: rejected" in first.stderr
    status, rows = call(node, "GET", "/api/v1/customers?sort=name&limit=100")
    assert [r["name"] for r in rows] == ["Asha Rao", "Ravi", "Ravi"]  # two distinct Ravis
    asha = rows[0]
    assert asha["tags"] == ["vip", "wholesale"] and asha["credit_limit"] == 50000
    assert asha["phone"] == "+919820011111"
    again = shopnode("import", "customers", str(source), env=node.env)
    assert "imported 0, already present 3, rejected 3" in again.stdout
    assert len(call(node, "GET", "/api/v1/customers")[1]) == 3


def test_import_refuses_unknown_columns(node, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("name,emial\nA,a@example.com\n")
    result = shopnode("import", "customers", str(source), env=node.env)
    assert result.returncode == 1 and "emial" in result.stderr
    assert call(node, "GET", "/api/v1/customers")[1] == []


def test_export_customers_and_ledger(node, tmp_path):
    _, jane = call(node, "POST", "/api/v1/customers", {"name": "Jane", "tags": ["a", "b"]})
    call(node, "POST", "/api/v1/sales", {"customer_id": jane["id"], "total": 15000,
                                         "payment_method": "account"})  # fmt: skip
    call(node, "POST", f"/api/v1/customers/{jane['id']}/ledger",
         {"type": "credit", "amount": 10000})  # fmt: skip
    people, ledger = tmp_path / "people.csv", tmp_path / "ledger.csv"
    assert shopnode("export", "customers", str(people), env=node.env).returncode == 0
    assert shopnode("export", "ledger", str(ledger), env=node.env).returncode == 0
    with open(people) as handle:
        exported = list(csv.DictReader(handle))
    assert [(r["name"], r["tags"], r["ledger_balance"]) for r in exported] == [
        ("Jane", "a;b", "-5000")]  # fmt: skip
    with open(ledger) as handle:
        entries = list(csv.DictReader(handle))
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("debit", "15000", "-15000"), ("credit", "10000", "-5000")]  # fmt: skip
