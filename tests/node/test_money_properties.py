"""Random sequences of money operations through the HTTP API against a model of the shop.

After every step, for every customer: the ledger balance equals the sum of the entries, the
points equal the sum of the loyalty events in the database, total_spent and total_orders
match what the sales and refunds imply, and points are never negative; and every cached
total (kept incrementally by local writes) equals its full recomputation (`shopnode
verify`). Requests the model
says must fail get a 4xx and change nothing.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from node import tokens, verify
from node.api.app import create_app
from node.config import load_config

EARN_RATE_TIMES_2 = 3  # the shop's earn rate is 1.5 points per dollar
POINT_VALUE = 10
CREDIT_LIMIT = 20000


def points_for(paid: int) -> int:
    """floor(1.5 x paid in dollars), exactly."""
    return paid * EARN_RATE_TIMES_2 // 200


class Node:
    """One in-process node over real HTTP on a real SQLite file, driven from sync code."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start(data_dir))
        self.db = sqlite3.connect(self.db_path)

    async def _start(self, data_dir: Path) -> None:
        config = load_config(
            environ={"SHOPNODE_NODE_DATA_DIR": str(data_dir), "SHOPNODE_API_PORT": "0"}
        )
        self.db_path = config.database_path
        self.client = TestClient(TestServer(create_app(config)))
        await self.client.start_server()
        self.headers = {"Authorization": f"Bearer {tokens.create_token('owner')}"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        async def go() -> tuple[int, Any, Any]:
            kw = {} if body is None else {"json": body}
            async with self.client.request(method, path, headers=self.headers, **kw) as r:
                return r.status, await r.json(content_type=None), r.headers

        return self.loop.run_until_complete(go())

    def points_in_db(self, customer_id: str) -> int:
        row = self.db.execute(
            "SELECT COALESCE(SUM(points), 0) FROM loyalty_event WHERE customer_id = ?",
            (customer_id,),
        ).fetchone()
        return row[0]

    def close(self) -> None:
        self.db.close()
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@dataclass
class Entry:
    type: str
    amount: int
    reverses: int | None = None  # index of the entry this one reverses
    manual: bool = True  # a payment, a manual debit or a reversal; not written by a sale
    id: str | None = None  # learned from the API
    reversed: bool = False


@dataclass(repr=False)
class Customer:
    name: str
    id: str
    limit: int | None
    balance: int = 0
    points: int = 0
    spent: int = 0
    orders: int = 0
    entries: list[Entry] = field(default_factory=list)

    def add(
        self, entry_type: str, amount: int, reverses: int | None = None, manual: bool = True
    ) -> None:
        self.entries.append(Entry(entry_type, amount, reverses, manual))
        self.balance += amount if entry_type == "credit" else -amount

    def available(self) -> int | None:
        return None if self.limit is None else max(0, self.limit + self.balance)

    def __repr__(self) -> str:  # what a failing example prints for each draw
        return f"<{self.name}: balance {self.balance}, points {self.points}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's printer
        printer.text(repr(self))


@dataclass(repr=False)
class Sale:
    id: str
    customer: Customer
    total: int
    discount: int
    method: str
    earned: int
    redeemed: int
    refunded: int = 0
    reversed: int = 0
    restored: int = 0
    refunds: int = 0
    # Whether the model knows this sale's points exactly. How points earned on a sale react
    # to a discount given after it (redeem with sale_id) is pinned in test_loyalty; here the
    # model then reads the points back and checks only bounds and the invariants.
    exact_points: bool = True

    @property
    def paid(self) -> int:
        return self.total - self.discount

    def __repr__(self) -> str:
        return (
            f"<{self.method} sale of {self.total} to {self.customer.name}: discount "
            f"{self.discount}, refunded {self.refunded}>"
        )

    _repr_pretty_ = Customer._repr_pretty_


PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("MONEY_PROPERTIES_SHRINK") else []
)
AMOUNTS = st.integers(1, 30000)


def points_to_redeem(balance: int) -> st.SearchStrategy[int]:
    """Mostly points the customer has (including all of them), sometimes one too many."""
    have = st.integers(1, balance) | st.just(balance) if balance else st.nothing()
    return have | have | st.just(balance + 1)


BAD_AMOUNTS = st.sampled_from([0, -1, 10.5, "100", True, None, 10**13, [5]])


class MoneyMachine(RuleBasedStateMachine):
    node: Node  # set by the test

    @initialize()
    def make_customers(self) -> None:
        self.customers: list[Customer] = []
        self.sales: list[Sale] = []
        for name, limit in (("Open account", None), ("Limited", CREDIT_LIMIT)):
            status, body, _ = self.node.call(
                "POST", "/api/v1/customers", {"name": name, "credit_limit": limit}
            )
            assert status == 201, body
            self.customers.append(Customer(name, body["id"], limit))

    # -- helpers ------------------------------------------------------------------------------

    def points_now(self, customer: Customer) -> int:
        status, shown, _ = self.node.call("GET", f"/api/v1/customers/{customer.id}")
        assert status == 200, shown
        return shown["loyalty_points"]

    def expect_refused(self, status: int, body: Any, expected: int) -> None:
        assert status == expected, (status, body)
        assert body["status"] == expected

    # -- rules --------------------------------------------------------------------------------

    @rule(
        data=st.data(),
        total=AMOUNTS,
        method=st.sampled_from(["cash", "card", "account"]),
        redeem_some=st.booleans(),
    )
    def sale(self, data, total: int, method: str, redeem_some: bool) -> None:
        customer = data.draw(st.sampled_from(self.customers))
        redeem = 0
        if redeem_some and (customer.points or data.draw(st.integers(0, 3)) == 0):
            redeem = data.draw(points_to_redeem(customer.points))
        discount = redeem * POINT_VALUE
        paid = total - discount
        body = {"customer_id": customer.id, "total": total, "payment_method": method}
        if redeem:
            body["redeem_points"] = redeem
        status, result, _ = self.node.call("POST", "/api/v1/sales", body)
        if discount > total:
            return self.expect_refused(status, result, 422)
        if redeem > customer.points:
            return self.expect_refused(status, result, 409)
        available = customer.available()
        if method == "account" and available is not None and paid > available:
            self.expect_refused(status, result, 409)
            assert result["available_credit"] == available
            return
        assert status == 201, result
        earned = points_for(paid)
        assert (result["total"], result["discount_amount"]) == (total, discount)
        assert result["points_earned"] == earned
        customer.points += earned - redeem
        customer.spent += paid
        customer.orders += 1
        if method == "account" and paid:
            customer.add("debit", paid, manual=False)
        self.sales.append(Sale(result["id"], customer, total, discount, method, earned, redeem))

    @rule(data=st.data(), amount=AMOUNTS)
    def payment(self, data, amount: int) -> None:
        customer = data.draw(st.sampled_from(self.customers))
        status, body, _ = self.node.call(
            "POST", f"/api/v1/customers/{customer.id}/ledger", {"type": "credit", "amount": amount}
        )
        assert status == 201, body
        customer.add("credit", amount)
        assert body["balance_after"] == customer.balance

    @rule(data=st.data(), amount=AMOUNTS, override=st.booleans())
    def manual_debit(self, data, amount: int, override: bool) -> None:
        customer = data.draw(st.sampled_from(self.customers))
        body: dict[str, Any] = {"type": "debit", "amount": amount}
        if override:
            body["override_credit_limit"] = True
        status, result, _ = self.node.call("POST", f"/api/v1/customers/{customer.id}/ledger", body)
        available = customer.available()
        if not override and available is not None and amount > available:
            self.expect_refused(status, result, 409)
            assert result["available_credit"] == available
            return
        assert status == 201, result
        customer.add("debit", amount)
        assert result["balance_after"] == customer.balance

    @precondition(lambda self: any(e.manual for c in self.customers for e in c.entries))
    @rule(data=st.data())
    def reverse(self, data) -> None:
        # Only entries a person made: whether a sale's own entries may be reversed is pinned
        # in test_ledger (a sale's debt must not be cancelled twice).
        customer = data.draw(
            st.sampled_from([c for c in self.customers if any(e.manual for e in c.entries)])
        )
        manual = [i for i, e in enumerate(customer.entries) if e.manual]
        open_ones = [i for i in manual if customer.entries[i].reverses is None]
        open_ones = [i for i in open_ones if not customer.entries[i].reversed]
        if open_ones and data.draw(st.integers(0, 3)):  # mostly a reversal that should work
            index = data.draw(st.sampled_from(open_ones))
        else:
            index = data.draw(st.sampled_from(manual))
        entry = customer.entries[index]
        status, body, _ = self.node.call(
            "POST", f"/api/v1/customers/{customer.id}/ledger/{entry.id}/reverse"
        )
        if entry.reverses is not None or entry.reversed:
            return self.expect_refused(status, body, 409)
        assert status == 201, body
        entry.reversed = True
        customer.add("debit" if entry.type == "credit" else "credit", entry.amount, index)

    @precondition(lambda self: any(c.points for c in self.customers))
    @rule(data=st.data(), on_sale=st.booleans())
    def redeem(self, data, on_sale: bool) -> None:
        with_points = [c for c in self.customers if c.points]
        mostly = with_points if with_points and data.draw(st.integers(0, 3)) else self.customers
        customer = data.draw(st.sampled_from(mostly))
        points = data.draw(points_to_redeem(customer.points))
        sale = data.draw(st.sampled_from(self.sales)) if on_sale and self.sales else None
        body: dict[str, Any] = {"points": points}
        if sale is not None:
            body["sale_id"] = sale.id
        status, result, _ = self.node.call(
            "POST", f"/api/v1/customers/{customer.id}/loyalty/redeem", body
        )
        discount = points * POINT_VALUE
        if points > customer.points:
            return self.expect_refused(status, result, 409)
        if sale is not None and sale.customer is not customer:
            return self.expect_refused(status, result, 404)
        if sale is not None and discount > sale.paid - sale.refunded:
            return self.expect_refused(status, result, 422)
        assert status == 200, result
        assert (result["redeemed"], result["discount_amount"]) == (points, discount)
        before = customer.points
        if sale is None:
            customer.points -= points
        else:
            customer.points = self.points_now(customer)
            assert 0 <= customer.points <= before - points
            sale.exact_points = False
            sale.discount += discount
            sale.redeemed += points
            customer.spent -= discount
            if sale.method == "account":
                customer.add("credit", discount, manual=False)
        assert result["remaining_points"] == customer.points

    @precondition(lambda self: self.sales)
    @rule(data=st.data(), full=st.booleans())
    def refund(self, data, full: bool) -> None:
        sale = data.draw(st.sampled_from(self.sales))
        customer = sale.customer
        refundable = sale.paid - sale.refunded
        amount = None if full else data.draw(st.integers(1, refundable + 50))
        body = None if amount is None else {"amount": amount}
        status, result, _ = self.node.call("POST", f"/api/v1/sales/{sale.id}/refund", body)
        if refundable == 0 and (sale.paid > 0 or sale.refunds):
            return self.expect_refused(status, result, 409)
        if amount is not None and amount > refundable:
            return self.expect_refused(status, result, 422)
        assert status == 201, result
        amount = refundable if amount is None else amount
        refunded = sale.refunded + amount

        def share(points: int) -> int:
            return points * refunded // sale.paid if sale.paid else points

        assert result["amount"] == amount
        if sale.exact_points:
            to_restore = share(sale.redeemed) - sale.restored
            to_reverse = share(sale.earned) - sale.reversed
            assert to_restore >= 0 and to_reverse >= 0
            customer.points += to_restore
            reversed_now = min(to_reverse, customer.points)
            customer.points -= reversed_now
            assert result["points_restored"] == to_restore
            assert result["points_reversed"] == reversed_now
            assert result["points_shortfall"] == to_reverse - reversed_now
            sale.restored += to_restore
            sale.reversed += to_reverse
        else:
            customer.points = self.points_now(customer)
        sale.refunded = refunded
        sale.refunds += 1
        customer.spent -= amount
        if refunded == sale.paid:
            customer.orders -= 1
        if sale.method == "account" and amount:
            customer.add("credit", amount, manual=False)

    @rule(data=st.data(), bad=BAD_AMOUNTS, kind=st.sampled_from(["payment", "sale", "redeem"]))
    def refused_bad_value(self, data, bad: Any, kind: str) -> None:
        customer = data.draw(st.sampled_from(self.customers))
        if kind == "payment":
            path, body = (
                f"/api/v1/customers/{customer.id}/ledger",
                {"type": "credit", "amount": bad},
            )
        elif kind == "sale":
            path = "/api/v1/sales"
            body = {"customer_id": customer.id, "total": bad, "payment_method": "account"}
        else:
            path, body = f"/api/v1/customers/{customer.id}/loyalty/redeem", {"points": bad}
        status, result, _ = self.node.call("POST", path, body)
        self.expect_refused(status, result, 422)

    @precondition(lambda self: self.sales)
    @rule(data=st.data(), bad=BAD_AMOUNTS)
    def refused_bad_refund(self, data, bad: Any) -> None:
        sale = data.draw(st.sampled_from(self.sales))
        status, result, _ = self.node.call(
            "POST", f"/api/v1/sales/{sale.id}/refund", {"amount": bad}
        )
        assert 400 <= status < 500, result

    # -- what must always hold ----------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        assert verify.differences() == []
        for customer in self.customers:
            status, shown, _ = self.node.call("GET", f"/api/v1/customers/{customer.id}")
            assert status == 200, shown
            who = customer.name
            points = shown["loyalty_points"]
            assert points >= 0, f"{who}: negative points {points}"
            in_db = self.node.points_in_db(customer.id)
            assert points == in_db, f"{who}: loyalty_points {points} != sum of events {in_db}"
            assert points == customer.points, f"{who}: points {points}, expected {customer.points}"
            assert shown["total_spent"] == customer.spent, f"{who}: total_spent"
            assert shown["total_orders"] == customer.orders, f"{who}: total_orders"

            entries = self.whole_ledger(customer)
            running = 0
            for entry in entries:
                running += entry["amount"] if entry["type"] == "credit" else -entry["amount"]
                assert entry["balance_after"] == running, f"{who}: balance_after of {entry}"
            balance = shown["ledger_balance"]
            assert balance == running, f"{who}: ledger_balance {balance} != sum {running}"
            assert running == customer.balance, (
                f"{who}: balance {running}, expected {customer.balance}"
            )
            assert [(e["type"], e["amount"]) for e in entries] == [
                (e.type, e.amount) for e in customer.entries
            ], f"{who}: ledger entries"
            for mine, theirs in zip(customer.entries, entries, strict=True):
                assert mine.id in (None, theirs["id"]), f"{who}: an entry changed its id"
                mine.id = theirs["id"]
                if mine.reverses is not None:
                    assert theirs["reverses_id"] == customer.entries[mine.reverses].id

    def whole_ledger(self, customer: Customer) -> list[dict]:
        """Every entry, oldest first, read page by page (25 a page, so paging is exercised)."""
        entries: list[dict] = []
        for page in range(1, 100):
            status, rows, headers = self.node.call(
                "GET", f"/api/v1/customers/{customer.id}/ledger?limit=25&page={page}"
            )
            assert status == 200, rows
            assert int(headers["X-Total-Count"]) == len(customer.entries)
            entries.extend(rows)
            if len(rows) < 25:
                break
        assert len({e["id"] for e in entries}) == len(entries) == len(customer.entries)
        return entries[::-1]


def test_money_operations_keep_the_books_consistent(tmp_path):
    node = Node(tmp_path / "data")
    try:
        status, body, _ = node.call(
            "PATCH", "/api/v1/settings", {"earn_rate": 1.5, "point_value": POINT_VALUE}
        )
        assert status == 200, body
        MoneyMachine.node = node
        run_state_machine_as_test(
            MoneyMachine,
            settings=settings(
                max_examples=30,
                stateful_step_count=50,
                deadline=None,
                database=None,
                # Shrinking replays hundreds of HTTP sequences (minutes); opt in to get a
                # minimal failing example: MONEY_PROPERTIES_SHRINK=1 pytest ...
                phases=PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        node.close()
