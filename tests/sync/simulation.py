"""A deterministic simulation of several shops syncing through one central node, with faults.

One process plays every part: N shop nodes, each on its own SQLite file, and a CentralStore
on another. One thing at a time, so "being" a node means pointing the global peewee proxy
(`node.db.database`) at that node's database and switching the virtual clock and UUIDv7
state to that node's (a catch-up round, as `shopnode sync` runs one, applies its pages on a
thread of its own while the round waits for it). A `random.Random(seed)` decides everything
— which node does what, when it syncs, which messages are lost, duplicated, delayed or
replayed, when a node crashes, how far its clock is off — and the node's clocks and id
randomness come from the simulation too, so a seed replays exactly.

Faults injected by `SimTransport` (the `sync.worker.Transport` a round talks to):
request lost, response lost after central committed, push delivered twice, push delayed and
delivered later, the tail of a batch arriving before its head (a gap), a stale earlier pull
answer delivered again, one-way partitions, crashes before/after a call (the round stops
where it is) and crashes inside `apply_page` after some changes (the page's transaction must
roll back) or inside a local write. Clocks are skewed by up to days per node and step
backwards now and then. Operators and attackers too: a shop restored from one of its
earlier backups, central restored from one of its earlier backups (declared with a new
epoch, or silently), a hostile store pushing malformed, forged-origin and well-formed but
orphaned or forged facts, two sync workers at once on one node, and central's database
connection dropped.

After the random phase every fault is healed, time passes until no edit is stamped ahead of
any clock, and each node runs rounds until quiescent; `Simulation.check()` then lists every
way the nodes and central disagree, every total that differs from its facts
(`node.verify`), every acknowledged payment that is missing or not everywhere, and every
trace of a deleted customer's personal data in any database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import shutil
import sqlite3
import tempfile
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee

import node.hlc as hlc_module
import node.verify as verify_module
import sync.merge as merge_module
import sync.store as store_module
import sync.worker as worker_module
from node import changes, customers, ledger, loyalty, models, sales
from node.clock import Clock, current_clock, now_iso, use_clock, uuid7
from node.db import database, fetch_all, fetch_one, get_meta, open_database
from node.errors import Conflict, Invalid, NotFound, Unprocessable
from node.migrations import migrate
from node.settings import seed_settings
from sync.progress import ACKED
from sync.protocol import MAX_BATCH_CHANGES, MAX_PULL_LIMIT, ProtocolError, check_change
from sync.store import CentralStore, Forbidden
from sync.worker import CentralUnreachable, RoundResult, pull_all, push_all, sync_round

REPLAY = "SHOPNODE_SIM_SEED={seed} python -m pytest tests/sync/test_simulation.py -k replay"

# The errors a domain call may answer with when the simulation asks for something the node
# refuses (unknown or anonymized customer, over the credit limit, too many points...).
EXPECTED_ERRORS = (NotFound, Conflict, Invalid, Unprocessable)

SETTINGS = {"earn_rate": 1, "point_value": 10, "default_credit_limit": 30_000, "currency": "USD"}

MS = 1_000_000
SECOND = 1000 * MS
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
BASE_NS = 1_748_736_000 * SECOND  # 2025-06-01T00:00:00Z

# Small batches and pages, so one round takes several of each and can fail between them.
SIM_PUSH_BATCH = 4
SIM_MAX_PAGE = 6
HEAL_PASSES = 8
# After the last fault every node holds everything within this many rounds each: one to
# push (and pull what was pushed before it), one to pull what was pushed after it.
CONVERGE_PASSES = 2

PUSH_FAULTS = ("lost_request", "lost_response", "duplicate", "delayed", "reordered",
               "crash_before", "crash_after")  # fmt: skip
PULL_FAULTS = ("lost_request", "lost_response", "stale", "crash_before", "crash_after")

FIRST = ("Asha", "Ravi", "Meera", "John", "Lena", "Omar", "Yuki", "Ana", "Kofi", "Ivan")
LAST = ("Rao", "Shah", "Okafor", "Smith", "Novak", "Haddad", "Sato", "Silva", "Mensah")


class SimCrash(Exception):
    """The simulated node process died here; whatever it had committed stays."""


# -- clocks and randomness of the node under simulation -------------------------------------

_active: Simulation | None = None


def _sim() -> Simulation:
    if _active is None:
        raise RuntimeError("node clock used outside a running simulation")
    return _active


class SimClock(Clock):
    """One simulated process's clock: the virtual time (with the acting node's skew), ids
    from the seed; its UUIDv7 order is its own, as a process's is."""

    def time_ns(self) -> int:
        return _sim().clock_ns()

    def random_bytes(self, n: int) -> bytes:
        return _sim().id_rng.randbytes(n)

    def wall_ms(self) -> int:
        sim = _sim()
        if sim.crash_in_write:
            sim.crash_in_write = False
            raise SimCrash("crash inside a local write, after its rows, before its change")
        return super().wall_ms()


def _crashable_apply_change(change: dict[str, Any], my_origin: str) -> str:
    sim = _sim()
    if sim.crash_after_applies is not None:
        if sim.crash_after_applies <= 0:
            sim.crash_after_applies = None
            sim.faults["crash_in_apply_page"] += 1
            raise SimCrash("crash inside apply_page")
        sim.crash_after_applies -= 1
    return _original["apply_change"](change, my_origin)


def _checked_apply_page(*args: Any) -> Any:
    """apply_page, verifying that a crash inside it leaves nothing of the page behind."""
    sim = _sim()
    before = sim.snapshot()
    try:
        return _original["apply_page"](*args)
    except SimCrash:
        after = sim.snapshot()
        if after != before:
            sim.problems.append(f"a crash inside apply_page was not rolled back: "
                                f"{before} became {after}")  # fmt: skip
        raise


_original: dict[str, Any] = {}


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Route node clocks, id randomness and the sync hooks through the active simulation."""
    replacements = [
        (merge_module, "apply_change", _crashable_apply_change),
        (worker_module, "apply_page", _checked_apply_page),
        (worker_module, "MAX_BATCH_CHANGES", SIM_PUSH_BATCH),
        # Seeds restore central several times within seconds of real time.
        (store_module, "AUTO_EPOCH_SECONDS", 0),
        # A catch-up's transactions end by their size, never by the real clock: a seed
        # replays the same transactions, and so the same rollbacks on a crash.
        (worker_module, "COMMIT_SECONDS", 24 * 3600.0),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in replacements]
    saved_clock = current_clock()
    _original["apply_change"] = merge_module.apply_change
    _original["apply_page"] = worker_module.apply_page
    for module, name, value in replacements:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        use_clock(saved_clock)


# -- one node and its link to central --------------------------------------------------------


@dataclass
class SimNode:
    index: int
    path: Path
    skew_ns: int
    db: peewee.SqliteDatabase | None = None
    store_id: str = ""
    clock: SimClock = field(default_factory=SimClock)  # one per process
    push_blocked_until: int = -1
    pull_blocked_until: int = -1
    pull_answers: list[tuple[int, str]] = field(default_factory=list)  # (after, JSON)

    @property
    def name(self) -> str:
        return f"shop{self.index}"


class SimTransport:
    """The Transport a round uses: central's calls in-process, with faults on the way."""

    def __init__(self, sim: Simulation, node: SimNode, faulty: bool) -> None:
        self.sim = sim
        self.node = node
        self.faulty = faulty

    async def push(self, payload: dict[str, Any]) -> dict[str, Any]:
        sim, node = self.sim, self.node
        wire = json.loads(json.dumps(payload))  # the request as it leaves the node
        fault = None
        if self.faulty:
            if sim.step < node.push_blocked_until:
                sim.faults["push_partitioned"] += 1
                raise CentralUnreachable("partitioned: pushes do not get through")
            fault = sim.pick_fault(PUSH_FAULTS)
        if fault is None:
            return sim.deliver_push(node, wire)
        sim.faults[f"push_{fault}"] += 1
        sim.trace.append(f"  push fault {fault} ({len(wire['changes'])} changes)")
        if fault == "lost_request":
            raise CentralUnreachable("request lost")
        if fault == "crash_before":
            raise SimCrash("crashed before pushing")
        if fault == "lost_response":
            sim.deliver_push(node, wire)
            raise CentralUnreachable("response lost")
        if fault == "crash_after":
            sim.deliver_push(node, wire)
            raise SimCrash("crashed after central committed the push")
        if fault == "duplicate":
            sim.deliver_push(node, wire)
            return sim.deliver_push(node, wire)
        if fault == "delayed":
            sim.in_flight.append((node, wire))
            raise CentralUnreachable("timed out; the request is still on its way")
        # reordered: the tail of the batch arrives first (a gap for central), then all of it
        if len(wire["changes"]) >= 2:
            cut = sim.rng.randint(1, len(wire["changes"]) - 1)
            sim.deliver_push(node, {**wire, "changes": wire["changes"][cut:]})
        return sim.deliver_push(node, wire)

    async def pull(self, after: int, limit: int, origin: str, after_id: str = "",
                   epoch: str = "") -> dict[str, Any]:  # fmt: skip
        sim, node = self.sim, self.node
        fault = None
        if self.faulty:
            if sim.step < node.pull_blocked_until:
                sim.faults["pull_partitioned"] += 1
                raise CentralUnreachable("partitioned: pulls do not get through")
            fault = sim.pick_fault(PULL_FAULTS)
        if fault is not None:
            sim.faults[f"pull_{fault}"] += 1
            sim.trace.append(f"  pull fault {fault} (after {after})")
        if fault == "lost_request":
            raise CentralUnreachable("request lost")
        if fault == "crash_before":
            raise SimCrash("crashed before pulling")
        if fault == "stale":
            # An earlier answer to a question with the same or a smaller cursor: a consistent
            # snapshot of central at that time, so applying it must be harmless.
            earlier = [text for asked, text in node.pull_answers if asked <= after]
            if earlier:
                return json.loads(sim.rng.choice(earlier))
            sim.faults["pull_stale"] -= 1
        limit = min(limit, MAX_PULL_LIMIT, sim.rng.randint(1, SIM_MAX_PAGE))
        with sim.as_central():
            answer = sim.central.pull(after, limit, origin, after_id, epoch)
        if answer.get("reset") and not sim.central_restored:
            sim.problems.append(
                f"step {sim.step}: central answered {node.name}'s pull after "
                f"{after} ({after_id}) with a reset, but was never restored"
            )
        text = json.dumps(answer)
        node.pull_answers = [*node.pull_answers[-7:], (after, text)]
        if fault == "lost_response":
            raise CentralUnreachable("response lost")
        if fault == "crash_after":
            raise SimCrash("crashed after central answered the pull")
        return json.loads(text)


# -- the simulation ----------------------------------------------------------------------------


class Simulation:
    """One seed: build the shops, run the random phase, heal, then `check()`."""

    def __init__(self, seed: int, root: Path, template: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.id_rng = random.Random(f"shopnode-sim-ids-{seed}")
        self.dir = root / f"seed-{seed}"
        self.template = template
        self.trace: list[str] = []
        self.problems: list[str] = []
        self.faults: Counter[str] = Counter()
        self.step = 0
        self.now_ns = BASE_NS + self.rng.randrange(365 * DAY // MS) * MS
        self.current: SimNode | None = None
        self.central_clock = SimClock()
        self.crash_in_write = False
        self.crash_after_applies: int | None = None
        self.in_flight: list[tuple[SimNode, dict[str, Any]]] = []
        self.fault_plan: list[str] = []  # faults a directed scenario asks for, in order
        self.fixed_step_ns = 0  # a directed scenario's clock moves by this much per step
        self.personal: dict[str, set[str]] = defaultdict(set)  # customer id -> its data
        self.marker = 0
        self.doing = ""  # the operation under way, for the trace
        self.n_nodes = self.rng.choice((3, 3, 4))
        self.n_steps = self.rng.randint(30, 50)
        self.fault_rate = self.rng.choice((0.0, 0.15, 0.3, 0.5))
        self.nodes: list[SimNode] = []
        self.central: CentralStore
        self.central_restored = False
        self.shop_restored = False
        self.backups: dict[int, list[tuple[int, Path]]] = defaultdict(list)  # node: (step, file)
        self.central_backups: list[Path] = []
        self.restores: list[tuple[int, int, int]] = []  # (node, backup step, restore step)
        self.payments: dict[str, tuple[int, int]] = {}  # entry id -> (node, step)
        self.mallory = ""  # a hostile store's id, its origin and next sequence
        self.mallory_origin = ""
        self.mallory_seq = 1
        self.mallory_changes: list[dict[str, Any]] = []  # what it re-sends, like any store
        self.orphans: set[str] = set()  # ids a hostile but well-formed change waits for
        self.heal_passes = 0
        # Which side an operator restores in this seed. Not both: a change lost by its own
        # shop's restore AND central's survives only on shops that pulled it (a known
        # limit: nothing re-sends another shop's changes; see the sync issue's note).
        self.restorable = self.rng.choice(("shop", "central"))

    # -- clocks and identities ---------------------------------------------------------
    def clock_ns(self) -> int:
        return self.now_ns + (self.current.skew_ns if self.current else 0)

    def advance(self) -> None:
        if self.fixed_step_ns:
            self.now_ns += self.fixed_step_ns
            return
        roll = self.rng.random()
        if roll < 0.8:
            self.now_ns += self.rng.randint(1, 20_000) * MS
        elif roll < 0.97:
            self.now_ns += self.rng.randint(1, 120) * MINUTE
        else:
            self.now_ns += self.rng.randint(1, 3) * DAY

    def use(self, node: SimNode) -> None:
        """Act as this node from now on: its database, its clock, its id generator."""
        self.current = node
        use_clock(node.clock)
        if node.db is not None:
            database.initialize(node.db)

    @contextlib.contextmanager
    def as_central(self) -> Iterator[None]:
        node = self.current
        self.current = None
        use_clock(self.central_clock)
        try:
            yield
        finally:
            self.current = node
            if node is not None:
                use_clock(node.clock)

    def restart(self, node: SimNode) -> None:
        """The node's process comes back after a crash: new connection, fresh memory."""
        assert node.db is not None
        node.db.close()
        node.db.connect()
        node.clock = SimClock()
        use_clock(node.clock)
        node.pull_answers = []

    def pick_fault(self, kinds: tuple[str, ...]) -> str | None:
        if self.fault_plan and self.fault_plan[0] in kinds:
            return self.fault_plan.pop(0)
        if self.fault_rate and self.rng.random() < self.fault_rate:
            return self.rng.choice(kinds)
        return None

    # -- set-up and tear-down ------------------------------------------------------------
    def start(self, skews: list[int] | None = None) -> None:
        """Central and the shops; `skews` (ns) fixes the shops' clocks for a directed test."""
        self.dir.mkdir(parents=True)
        with self.as_central():
            self.central = CentralStore(f"sqlite:///{self.dir / 'central.db'}")
        if skews is not None:
            self.n_nodes = len(skews)
        for index in range(self.n_nodes):
            skew = self.rng.choice((0, 0, self.rng.randint(-5 * MINUTE, 5 * MINUTE),
                                    self.rng.randint(-3 * DAY, 3 * DAY)))  # fmt: skip
            if skews is not None:
                skew = skews[index]
            node = SimNode(index, self.dir / f"shop{index}.db", skew)
            shutil.copyfile(self.template, node.path)
            self.use(node)
            node.db = open_database(node.path)
            seed_settings(SETTINGS)
            with self.as_central():
                node.store_id = self.central.add_store(node.name)["store_id"]
            self.nodes.append(node)
            self.trace.append(f"{node.name}: origin {changes.origin_id()}, "
                              f"clock skew {skew / SECOND:+.0f} s")  # fmt: skip
        with self.as_central():
            self.mallory = self.central.add_store("mallory")["store_id"]
            self.mallory_origin = uuid7()

    def close(self) -> None:
        for node in self.nodes:
            if node.db is not None:
                node.db.close()
        with contextlib.suppress(AttributeError):
            self.central.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the random phase -------------------------------------------------------------------
    async def run(self) -> None:
        for step in range(self.n_steps):
            self.step = step
            self.advance()
            node = self.rng.choice(self.nodes)
            self.use(node)
            if self.rng.random() < 0.35:
                await self.sync_action(node)
            else:
                self.operation(node)
        await self.heal()

    def snapshot(self) -> tuple:
        """What a rolled-back transaction must leave exactly as it was."""
        row = fetch_one(
            "SELECT (SELECT COUNT(*) FROM change_log) AS log, "
            "(SELECT value FROM meta WHERE key = 'sync_pull_cursor') AS cursor, "
            "(SELECT value FROM meta WHERE key = 'sync_pull_cursor_id') AS cursor_id, "
            "(SELECT value FROM meta WHERE key = 'hlc') AS hlc, "
            "(SELECT COUNT(*) FROM customer) AS customers, "
            "(SELECT COUNT(*) FROM ledger_entry) AS entries, "
            "(SELECT COUNT(*) FROM loyalty_event) AS events, "
            "(SELECT COUNT(*) FROM sale) + (SELECT COUNT(*) FROM refund) AS sales, "
            "(SELECT COUNT(*) FROM sync_report) AS reports, "
            "(SELECT COUNT(*) FROM sync_pending) AS pending, "
            "(SELECT COUNT(*) FROM tombstone) AS tombstones, "
            "(SELECT TOTAL(ledger_balance) || '/' || TOTAL(loyalty_points) || '/' || "
            " TOTAL(total_spent) || '/' || TOTAL(total_orders) FROM customer) AS totals"
        )
        return tuple(row.values())

    # -- shop operations ---------------------------------------------------------------------
    def _mark(self) -> str:
        self.marker += 1
        return f"pd{self.seed}x{self.marker:04d}"

    def _profile(self, full: bool) -> dict[str, Any]:
        """Profile fields (as validated by the API) carrying unique markers."""
        rng = self.rng
        mark = self._mark()
        values: dict[str, Any] = {
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)} {mark}",
            "email": rng.choice((None, f"{mark}@example.com")),
            "phone": rng.choice((None, f"+1555{self.seed % 1000:03d}{self.marker:05d}")),
            "address": rng.choice((None, f"{rng.randint(1, 99)} Park Street {mark}")),
            "notes": rng.choice((None, f"likes tea {mark}")),
            "tags": rng.sample(["vip", "wholesale", f"t-{mark}"], rng.randint(0, 2)),
            "credit_limit": rng.choice((None, None, 5_000, 50_000)),
        }
        if full:
            return values
        keys = rng.sample(sorted(values), rng.randint(1, 4))
        return {k: values[k] for k in keys}

    def _remember(self, customer_id: str, fields: dict[str, Any]) -> None:
        for key in ("name", "email", "phone", "address", "notes"):
            if fields.get(key):
                self.personal[customer_id].add(fields[key])
        if fields.get("phone"):
            self.personal[customer_id].add(re.sub(r"\D", "", fields["phone"]))
        for tag in fields.get("tags") or ():
            if tag.startswith("t-"):
                self.personal[customer_id].add(tag)

    def _ids(self, sql: str, params: tuple = ()) -> list[str]:
        return [r["id"] for r in fetch_all(sql, params)]

    def _customer(self) -> str | None:
        """Mostly a live customer this node knows; now and then an anonymized one."""
        every = self._ids("SELECT id FROM customer ORDER BY id")
        live = self._ids("SELECT id FROM customer WHERE anonymized_at IS NULL ORDER BY id")
        if live and self.rng.random() < 0.92:
            return self.rng.choice(live)
        return self.rng.choice(every) if every else None

    def _points(self, customer_id: str) -> int:
        row = fetch_one("SELECT loyalty_points FROM customer WHERE id = ?", (customer_id,))
        return max(0, row["loyalty_points"]) if row else 0

    def operation(self, node: SimNode) -> None:
        rng = self.rng
        kind = rng.choices(
            ("create", "update", "delete", "sale", "payment", "debit", "reverse", "redeem",
             "refund"),
            weights=(3, 3, 0.7, 5, 2, 1.5, 1.2, 1.5, 1.8),
        )[0]  # fmt: skip
        customer_id = self._customer()
        if customer_id is None:
            kind = "create"
        crash = self.fault_rate > 0 and rng.random() < 0.04
        before = self.snapshot() if crash else None
        self.crash_in_write = crash
        label = f"{self.step:3d} {node.name} {kind} {(customer_id or '')[-6:]}"
        self.doing = ""
        try:
            detail = self._do(kind, customer_id)
        except EXPECTED_ERRORS as exc:
            detail = f"-> {type(exc).__name__}: {exc.detail}"
        except SimCrash:
            self.faults["crash_in_write"] += 1
            detail = "-> crashed inside the write"
            self.restart(node)
            if self.snapshot() != before:
                self.problems.append(f"step {self.step}: a write that crashed left traces")
        except Exception:
            self.trace.append(f"{label} {self.doing} -> raised:")
            raise
        finally:
            self.crash_in_write = False
        self.trace.append(f"{label} {detail}")

    def _do(self, kind: str, customer_id: str | None) -> str:
        rng = self.rng
        if kind == "create":
            fields = self._profile(full=True)
            created = customers.create_customer(fields)
            self._remember(created["id"], fields)
            return f"-> {created['id'][-6:]} {fields['name']!r}"
        assert customer_id is not None
        if kind == "update":
            fields = self._profile(full=False)
            customers.update_customer(customer_id, fields)
            self._remember(customer_id, fields)
            return f"{sorted(fields)}"
        if kind == "delete":
            balance = fetch_one("SELECT ledger_balance FROM customer WHERE id = ?", (customer_id,))
            if balance and balance["ledger_balance"] and rng.random() < 0.7:
                # Settle the account first (deleting refuses while money is owed either way).
                owed = balance["ledger_balance"]
                self.doing = f"settle {owed}"
                entry_type = "credit" if owed < 0 else "debit"
                ledger.record_entry(customer_id, entry_type, abs(owed), None, None, True)
                self.doing = f"settled {owed}, then delete"
            return f"{self.doing} -> {customers.delete_customer(customer_id)}"
        if kind == "sale":
            total = rng.choice((rng.randint(1, 500), rng.randint(100, 20_000)))
            method = rng.choice(("cash", "card", "account", "account"))
            points = self._points(customer_id)
            over = 3 if rng.random() < 0.1 else 0  # now and then more than the customer has
            redeem = rng.randint(0, points + over) if rng.random() < 0.4 else 0
            receipt = rng.choice((None, None, None, None, f"R-{rng.randint(1, 3)}"))
            override = method == "account" and rng.random() < 0.4
            self.doing = f"{method} {total} redeem {redeem} receipt {receipt}"
            sale = sales.record_sale(customer_id, total, method, redeem, receipt, override)
            return f"{self.doing} -> {sale['id'][-6:]}"
        if kind in ("payment", "debit"):
            amount = rng.randint(1, 15_000)
            entry_type = "credit" if kind == "payment" else "debit"
            override = kind == "debit" and rng.random() < 0.8
            self.doing = f"{amount}"
            entry = ledger.record_entry(customer_id, entry_type, amount, None, None, override)
            if kind == "payment":
                self.payments[entry["id"]] = (self.current.index, self.step)
            return self.doing
        if kind == "reverse":
            entries = self._ids("SELECT id FROM ledger_entry WHERE customer_id = ? ORDER BY id",
                                (customer_id,))  # fmt: skip
            if not entries:
                return "(no entries)"
            target = rng.choice(entries)
            self.doing = f"entry {target[-6:]}"
            ledger.reverse_entry(customer_id, target)
            return self.doing
        if kind == "redeem":
            over = 2 if rng.random() < 0.2 else 0
            points = rng.randint(1, max(1, self._points(customer_id)) + over)
            sale_ids = self._ids("SELECT id FROM sale WHERE customer_id = ? ORDER BY id",
                                 (customer_id,))  # fmt: skip
            sale_id = rng.choice(sale_ids) if sale_ids and rng.random() < 0.5 else None
            self.doing = f"{points} on {sale_id and sale_id[-6:]}"
            loyalty.redeem_points(customer_id, points, sale_id)
            return self.doing
        sale_ids = self._ids("SELECT id FROM sale ORDER BY id")
        if not sale_ids:
            return "(no sales)"
        sale_id = rng.choice(sale_ids)
        amount = rng.choice((None, rng.randint(1, 8_000)))
        self.doing = f"sale {sale_id[-6:]} amount {amount}"
        sales.refund_sale(sale_id, amount)
        return self.doing

    # -- sync --------------------------------------------------------------------------------
    def deliver_push(self, node: SimNode, wire: dict[str, Any]) -> dict[str, Any]:
        """What central's /sync/v1/push handler does with a request body."""
        if len(wire["changes"]) > MAX_BATCH_CHANGES:
            self.problems.append(f"a push of {len(wire['changes'])} changes is over the limit")
        batch = [check_change(c) for c in wire["changes"]]
        try:
            with self.as_central():
                answer = self.central.push(node.store_id, wire["origin"], batch,
                                           wire.get("acked"), wire.get("epoch"))  # fmt: skip
        except Forbidden as exc:
            self.problems.append(f"step {self.step}: central refused {node.name}: {exc}")
            raise CentralUnreachable(f"403: {exc}") from exc
        if answer.get("reused") and not self.shop_restored:
            self.problems.append(
                f"step {self.step}: central says {node.name} reused sequence "
                f"numbers {answer['reused']}, but no shop was restored"
            )
        return json.loads(json.dumps(answer))

    async def sync_action(self, node: SimNode) -> None:
        rng = self.rng
        faulty = self.fault_rate > 0
        ops = 1.0 if faulty else 0  # the faults operators and attackers cause
        action = rng.choices(
            ("round", "push", "pull", "deliver", "partition", "clock_step", "apply_crash",
             "backup", "restore_shop", "restore_central", "hostile", "two_workers",
             "central_connection_lost"),
            weights=(8, 2, 2, 1, 1.5 if faulty else 0, 0.7, 1.5 if faulty else 0,
                     2 * ops, 0.6 * ops, 0.6 * ops, 1.2 * ops, 1 * ops, 0.5 * ops),
        )[0]  # fmt: skip
        label = f"{self.step:3d} {node.name} {action}"
        if action == "backup":
            self.trace.append(f"{label}: {self.take_backups(node)}")
            return
        if action == "restore_shop" and self.restorable == "shop":
            self.trace.append(f"{label}: {self.restore_shop(node)}")
            return
        if action == "restore_central" and self.restorable == "central":
            self.trace.append(f"{label}: {self.restore_central()}")
            return
        if action.startswith("restore_"):
            action = "round"
        if action == "hostile":
            self.trace.append(f"{label}: {self.hostile_push(node)}")
            return
        if action == "central_connection_lost":
            self.central.db.close()  # the next call has to reconnect
            self.faults["central_connection_lost"] += 1
            self.trace.append(label)
            return
        if action == "two_workers":
            self.trace.append(label)
            await self.two_workers(node)
            return
        if action == "partition":
            until = self.step + rng.randint(3, 15)
            side = rng.choice(("push", "pull"))
            setattr(node, f"{side}_blocked_until", until)
            self.faults[f"partition_{side}"] += 1
            self.trace.append(f"{label}: no {side} until step {until}")
            return
        if action == "clock_step":
            back = rng.choice((rng.randint(1, 600) * SECOND, rng.randint(1, 2) * DAY))
            node.skew_ns -= back
            self.faults["clock_step_back"] += 1
            self.trace.append(f"{label}: clock steps back {back / SECOND:.0f} s")
            return
        if action == "deliver":
            if not self.in_flight:
                action = "round"
            else:
                late, wire = self.in_flight.pop(rng.randrange(len(self.in_flight)))
                self.faults["delayed_push_delivered"] += 1
                answer = self.deliver_push(late, wire)
                self.trace.append(f"{label}: a delayed push of {late.name} arrives -> {answer}")
                return
        if action == "apply_crash":
            self.crash_after_applies = rng.randint(0, 4)
        # Every third step's round is a `shopnode sync`: pages applied on its own thread,
        # several to a transaction (sync/worker.py CatchUp), which a crash rolls back whole.
        catch_up = action in ("round", "apply_crash") and self.step % 3 == 0
        if catch_up:
            self.faults["catch_up_round"] += 1
        self.trace.append(label + (" (catch-up)" if catch_up else ""))
        transport = SimTransport(self, node, faulty)
        result = RoundResult()
        try:
            if action in ("round", "apply_crash"):
                result = await sync_round(transport, catch_up=catch_up)
            elif action == "push":
                await push_all(transport, result)
            else:
                await pull_all(transport, result, None)
            self.trace.append(f"  {result.summary()}")
        except CentralUnreachable as exc:
            self.trace.append(f"  failed: {exc}")
        except SimCrash as exc:
            self.trace.append(f"  crashed: {exc}")
            self.restart(node)
        finally:
            self.crash_after_applies = None

    # -- operators' and attackers' faults ----------------------------------------------------
    def _copy_db(self, db: peewee.Database, target: Path) -> None:
        """A consistent copy of a live database (SQLite's online backup, like `backup`)."""
        copy = sqlite3.connect(target)
        try:
            db.connection().backup(copy)
        finally:
            copy.close()

    def take_backups(self, node: SimNode) -> str:
        assert node.db is not None
        target = self.dir / f"{node.name}-backup-{self.step}.db"
        self._copy_db(node.db, target)
        self.backups[node.index].append((self.step, target))
        if self.rng.random() < 0.5:
            central = self.dir / f"central-backup-{self.step}.db"
            with self.as_central():
                self._copy_db(self.central.db, central)
            self.central_backups.append(central)
            return "backed up this shop and central"
        return "backed up this shop"

    def restore_shop(self, node: SimNode) -> str:
        """The owner restores the shop from one of its earlier backups."""
        if not self.backups[node.index]:
            return "(no backup to restore)"
        step, backup = self.rng.choice(self.backups[node.index])
        assert node.db is not None
        node.db.close()
        for suffix in ("-wal", "-shm"):
            Path(str(node.path) + suffix).unlink(missing_ok=True)
        shutil.copyfile(backup, node.path)
        node.db = open_database(node.path)
        self.restart(node)
        self.shop_restored = True
        self.restores.append((node.index, step, self.step))
        self.faults["restore_shop"] += 1
        return f"restored from its backup of step {step}"

    def restore_central(self) -> str:
        """The operator restores central from an earlier backup, declared or not."""
        if not self.central_backups:
            return "(no central backup)"
        backup = self.rng.choice(self.central_backups)
        path = self.dir / "central.db"
        with self.as_central():
            self.central.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            shutil.copyfile(backup, path)
            self.central = CentralStore(f"sqlite:///{path}")
            declared = self.rng.random() < 0.5
            if declared:  # `shopnode central restore FILE`; else central must notice itself
                with self.central.db.atomic():
                    self.central.new_epoch("declared restored")
        self.central_restored = True
        self.faults["restore_central"] += 1
        return f"central restored from {backup.name} ({'declared' if declared else 'silently'})"

    def hostile_push(self, node: SimNode) -> str:
        """A store with a bug, or a stolen token: malformed changes must be refused whole;
        another store's origin is forbidden; well-formed facts are facts (an orphan waits
        for a customer that never comes, a forged payment is a payment everywhere)."""
        rng = self.rng
        self.faults["hostile"] += 1
        log = fetch_all("SELECT id, origin, origin_seq, hlc, kind, entity_id, body, "
                        "recorded_at FROM change_log ORDER BY id")  # fmt: skip
        live = self._ids("SELECT id FROM customer WHERE anonymized_at IS NULL ORDER BY id")
        how = rng.choice(("malformed", "malformed", "other_origin", "orphan", "forged_payment"))
        held = {r["id"] for r in self.central_rows("SELECT id FROM origin")}
        known = [c for c in log  # origins a store can have seen (not its own)
                 if c["origin"] in held and c["origin"] != self.mallory_origin]
        if how == "other_origin" and known:
            change = rng.choice(known)
            try:
                with self.as_central():
                    self.central.push(self.mallory, change["origin"], [check_change(change)])
            except Forbidden:
                return "pushing under a shop's origin: refused"
            self.problems.append(f"step {self.step}: central took a push under another origin")
            return "(accepted!)"
        if how in ("orphan", "forged_payment"):
            how = "forged_payment" if how == "forged_payment" and live else "orphan"
            target = rng.choice(live) if how == "forged_payment" else uuid7()
            stamp = now_iso()
            entry = {"id": uuid7(), "customer_id": target, "type": "credit",
                     "amount": rng.randint(1, 5000), "description": "forged", "reference_id": None,
                     "reverses_id": None, "created_at": stamp}  # fmt: skip
            change = {"id": uuid7(), "origin": self.mallory_origin,
                      "origin_seq": self.mallory_seq, "kind": "ledger.credit",
                      "hlc": hlc_module.encode(self.clock_ns() // MS, 0, self.mallory_origin),
                      "entity_id": entry["id"], "body": changes.encode_body(
                          {"ledger_entry": [entry]}), "recorded_at": stamp}  # fmt: skip
            with self.as_central():
                answer = self.central.push(self.mallory, self.mallory_origin,
                                           [check_change(change)])
            if answer["acked_seq"] == self.mallory_seq:
                self.mallory_seq += 1
                self.mallory_changes.append(change)
                if how == "orphan":
                    self.orphans.add(target)
            return f"{how} for {target[-6:]}: acked {answer['acked_seq']}"
        bad = self._malformed(rng.choice(log)) if log else {"id": "x"}
        try:
            check_change(bad)
        except ProtocolError as exc:
            return f"malformed change refused: {exc}"
        self.problems.append(f"step {self.step}: a malformed change passed the checks: {bad}")
        return "(accepted!)"

    def _malformed(self, change: dict[str, Any]) -> dict[str, Any]:
        change = dict(change, origin=self.mallory_origin, origin_seq=self.mallory_seq)
        body = json.loads(change["body"])
        rng = self.rng
        how = rng.choice(("hlc", "hlc_text", "no_created_at", "totals", "adds", "kind", "amount",
                          "entity", "extra_table", "not_json"))  # fmt: skip
        if how == "hlc":
            return {**change, "hlc": "garbage"}
        if how == "hlc_text":
            return {**change, "hlc": "2025-06-01T10:00:00Z"}
        if how == "kind":
            return {**change, "kind": "customer.rewritten"}
        if how == "entity":
            return {**change, "entity_id": "not-a-uuid"}
        if how == "not_json":
            return {**change, "body": "{oops"}
        if how == "adds":
            body["adds"] = [["customer", change["entity_id"], {"ledger_balance": 100000}]]
        elif how == "extra_table":
            body["api_token"] = [{"id": "x", "role": "owner"}]
        else:
            rows = [row for value in body.values() if isinstance(value, list) for row in value]
            if not rows:
                body["customer_id"] = 42
            elif how == "no_created_at":
                rows[0].pop("created_at", None)
            elif how == "totals":
                rows[0]["ledger_balance"] = 100000
            else:
                key = "amount" if "amount" in rows[0] else next(iter(rows[0]))
                rows[0][key] = -rows[0][key] if isinstance(rows[0][key], int) else {"x": 1}
        return {**change, "body": json.dumps(body)}

    async def two_workers(self, node: SimNode) -> None:
        """The worker inside `serve` and a manual `shopnode sync` at once: one at a time."""
        self.faults["two_workers"] += 1
        rounds = [sync_round(SimTransport(self, node, self.fault_rate > 0), catch_up=catch_up)
                  for catch_up in (False, True)]  # fmt: skip
        outcomes = await asyncio.gather(*rounds, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, SimCrash):
                self.trace.append(f"  crashed: {outcome}")
                self.restart(node)
            elif isinstance(outcome, CentralUnreachable):
                self.trace.append(f"  failed: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                self.trace.append(f"  {outcome.summary()}")

    def _let_clocks_catch_up(self) -> None:
        """Time passes until no clock is behind any stamp made so far: an edit stamped ahead
        of a node's clock waits there until that clock gets to it."""
        latest, slowest = 0, None
        for node in self.nodes:
            self.use(node)
            for row in fetch_all("SELECT MAX(hlc) AS hlc FROM change_log UNION ALL "
                                 "SELECT json_extract(change, '$.hlc') FROM sync_pending"):
                if row["hlc"]:
                    latest = max(latest, hlc_module.decode(row["hlc"])[0])
            clock = self.clock_ns() // MS
            slowest = clock if slowest is None else min(slowest, clock)
        lead = latest - (slowest or 0) - hlc_module.MAX_DRIFT_MS + 1
        if lead > 0:
            self.now_ns += lead * MS
            self.trace.append(f"-- {lead / 1000:.0f} s pass: edits stamped ahead are due")

    async def heal(self) -> None:
        """No more faults: late requests land, then rounds until every node holds everything."""
        self.trace.append("-- heal")
        self.step = self.n_steps
        for node, wire in self.in_flight:
            self.deliver_push(node, wire)
        self.in_flight.clear()
        if self.mallory_changes:  # a store re-sends what a restored central lost
            with self.as_central():
                self.central.push(self.mallory, self.mallory_origin,
                                  [check_change(c) for c in self.mallory_changes])
        self._let_clocks_catch_up()
        for passes in range(1, HEAL_PASSES + 1):
            self.heal_passes = passes
            for node in self.nodes:
                self.advance()
                self.use(node)
                try:
                    result = await sync_round(SimTransport(self, node, faulty=False))
                except CentralUnreachable as exc:
                    self.problems.append(f"{node.name}: a round without faults failed: {exc}")
                    continue
                self.trace.append(f"{node.name} round: {result.summary()}")
            if self.quiescent():
                if passes > CONVERGE_PASSES:
                    self.problems.append(f"converged only after {passes} rounds per node")
                return
        self.problems.append(f"not converged after {HEAL_PASSES} passes of rounds")

    async def sync(self, node: SimNode, *faults: str) -> RoundResult | Exception:
        """One round at this node (for directed scenarios), with these faults on the way."""
        self.advance()
        self.use(node)
        self.fault_plan = list(faults)
        try:
            return await sync_round(SimTransport(self, node, faulty=True))
        except (CentralUnreachable, SimCrash) as exc:
            if isinstance(exc, SimCrash):
                self.restart(node)
            return exc
        finally:
            self.fault_plan = []

    def quiescent(self) -> bool:
        held = self.central.db.execute_sql("SELECT COUNT(*) FROM change").fetchone()[0]
        for node in self.nodes:
            self.use(node)
            origin = changes.origin_id()
            local = fetch_one("SELECT COUNT(*) AS n, "
                              "COALESCE(MAX(CASE WHEN origin = ? THEN origin_seq END), 0) AS mine, "
                              "(SELECT COUNT(*) FROM sync_pending) AS pending "
                              "FROM change_log", (origin,))  # fmt: skip
            if local["n"] + local["pending"] != held:
                return False
            if int(get_meta(ACKED) or 0) != local["mine"]:
                return False
            if fetch_one("SELECT 1 FROM sync_pending WHERE waits_for = 'clock'"):
                return False
        return True

    # -- the checks --------------------------------------------------------------------------
    def central_rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        cursor = self.central.db.execute_sql(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def fingerprint(self) -> str:
        """A digest of everything central holds, plus the trace: equal runs, equal digests."""
        digest = hashlib.sha256()
        for row in self.central_rows("SELECT gseq, id, origin, origin_seq, hlc, body, "
                                     "recorded_at FROM change ORDER BY gseq"):  # fmt: skip
            digest.update(repr(sorted(row.items())).encode())
        digest.update("\n".join(self.trace).encode())
        return digest.hexdigest()

    def check(self) -> list[str]:
        problems = self.problems
        central = self.central_rows("SELECT id, origin, origin_seq, kind, entity_id, body "
                                    "FROM change ORDER BY gseq")  # fmt: skip
        central_ids = {c["id"]: (c["origin"], c["origin_seq"]) for c in central}
        if len(central_ids) != len(central):
            problems.append("central holds a change id twice")
        by_origin: dict[str, list[int]] = defaultdict(list)
        for c in central:
            by_origin[c["origin"]].append(c["origin_seq"])
        origins = self.central_rows("SELECT id, high_seq FROM origin")
        highs = {r["id"]: r["high_seq"] for r in origins}
        for origin, seqs in sorted(by_origin.items()):
            if sorted(seqs) != list(range(1, len(seqs) + 1)):
                problems.append(f"central: origin {origin} has sequence gaps {sorted(seqs)}")
            if highs.get(origin) != len(seqs):
                problems.append(f"central: origin {origin} high_seq {highs.get(origin)} "
                                f"but holds {len(seqs)} changes")  # fmt: skip
        for row in self.central_rows("SELECT change_id, origin_seq, reason FROM quarantine "
                                     "WHERE store_id <> ?", (self.mallory,)):  # fmt: skip
            problems.append(f"central quarantined {row}")
        scrubs = ("customer.anonymized", "customer.deleted")
        scrubbed = sorted({c["entity_id"] for c in central if c["kind"] in scrubs})
        self._check_no_personal_data("central change bodies", scrubbed,
                                     [(c["id"], c["body"]) for c in central])  # fmt: skip
        self._check_no_personal_data("central quarantine", scrubbed, [
            (str(r["id"]), r["body"] or "") for r in self.central_rows(
                "SELECT id, body FROM quarantine")])  # fmt: skip
        self._check_payments(central_ids)

        views = []
        for node in self.nodes:
            self.use(node)
            log = fetch_all("SELECT id, origin, origin_seq, body FROM change_log")
            waiting = [json.loads(r["change"])
                       for r in fetch_all("SELECT change FROM sync_pending")]
            held = {r["id"]: (r["origin"], r["origin_seq"]) for r in [*log, *waiting]}
            if len(held) != len(log) + len(waiting):
                problems.append(f"{node.name}: a change id twice in the change log")
            if held != central_ids:
                missing = len(set(central_ids) - set(held))
                extra = len(set(held) - set(central_ids))
                moved = sum(1 for k in set(held) & set(central_ids) if held[k] != central_ids[k])
                problems.append(
                    f"{node.name}: change log differs from central: {missing} "
                    f"missing, {extra} not at central, {moved} renumbered"
                )
            for report in fetch_all("SELECT kind, change_id, detail FROM sync_report "
                                    "WHERE kind = 'conflict' ORDER BY id"):  # fmt: skip
                problems.append(f"{node.name}: sync report {report}")
            self._check_no_personal_data(f"{node.name} change log", scrubbed,
                                         [(r["id"], r["body"]) for r in log])  # fmt: skip
            pending = fetch_all("SELECT change_id, waits_for, change FROM sync_pending")
            self._check_no_personal_data(f"{node.name} pending changes", scrubbed,
                                         [(r["change_id"], r["change"]) for r in pending])
            for row in pending:
                # A hostile store's fact may name a customer no shop ever synced.
                hostile = json.loads(row["change"])["origin"] == self.mallory_origin
                if row["waits_for"] not in self.orphans and not hostile:
                    problems.append(f"{node.name}: change {row['change_id']} still waits for "
                                    f"{row['waits_for']}")  # fmt: skip
            problems.extend(f"{node.name}: verify: {line}" for line in verify_module.differences())
            views.append(self._view(node, scrubbed))

        first = views[0]
        for node, view in zip(self.nodes[1:], views[1:], strict=True):
            for key in sorted(set(first) | set(view)):
                if first.get(key) != view.get(key):
                    problems.append(
                        f"{self.nodes[0].name} and {node.name} differ on {key}: "
                        f"{_short(first.get(key))} vs {_short(view.get(key))}"
                    )
        return problems

    def _check_payments(self, central_ids: dict[str, Any]) -> None:
        """Every acknowledged payment is on every node, unless the shop that took it was
        restored from a backup older than it before it reached central (then it is gone
        everywhere: the owner's backup did not have it)."""
        for entry_id, (index, step) in sorted(self.payments.items()):
            holders = []
            for node in self.nodes:
                self.use(node)
                if fetch_one("SELECT 1 FROM ledger_entry WHERE id = ?", (entry_id,)):
                    holders.append(node.name)
            if len(holders) == len(self.nodes):
                continue
            lost_to_restore = any(i == index and b < step <= r for i, b, r in self.restores)
            if holders or not lost_to_restore:
                self.problems.append(f"payment {entry_id} (shop{index}, step {step}) is on "
                                     f"{holders or 'no node'}")  # fmt: skip

    def _check_no_personal_data(self, where: str, scrubbed: list[str],
                                bodies: list[tuple[str, str]]) -> None:  # fmt: skip
        for customer_id in scrubbed:
            for needle in sorted(self.personal.get(customer_id, ())):
                for change_id, body in bodies:
                    if needle in body:
                        self.problems.append(
                            f"{where}: change {change_id} still holds {needle!r} of "
                            f"scrubbed customer {customer_id}"
                        )

    def _view(self, node: SimNode, scrubbed: list[str]) -> dict[str, Any]:
        """Everything that must be equal on every node, keyed for a readable diff."""
        problems = self.problems
        view: dict[str, Any] = {}
        rows = fetch_all("SELECT * FROM customer ORDER BY id")
        view["customer ids"] = [r["id"] for r in rows]
        for row in rows:
            cid = row["id"]
            key = f"customer {cid}"
            live = row["anonymized_at"] is None
            entries_sum = ledger.ledger_sum(cid)
            points_sum = loyalty.points_sum(cid)
            sale_rows = fetch_all("SELECT * FROM sale WHERE customer_id = ? ORDER BY id", (cid,))
            refund_rows = fetch_all(
                "SELECT r.* FROM refund r JOIN sale s ON s.id = r.sale_id "
                "WHERE s.customer_id = ? ORDER BY r.id", (cid,))  # fmt: skip
            spent = sum(s["total"] - s["discount_amount"] for s in sale_rows) - sum(
                r["amount"] for r in refund_rows
            )
            if row["ledger_balance"] != entries_sum:
                problems.append(f"{node.name}: {key} ledger_balance {row['ledger_balance']} "
                                f"but its entries sum to {entries_sum}")  # fmt: skip
            if row["loyalty_points"] != points_sum:
                problems.append(f"{node.name}: {key} loyalty_points {row['loyalty_points']} "
                                f"but its events sum to {points_sum}")  # fmt: skip
            if row["total_spent"] != spent:
                problems.append(f"{node.name}: {key} total_spent {row['total_spent']} but "
                                f"its sales and refunds give {spent}")  # fmt: skip
            self._check_sales(node, sale_rows, refund_rows)
            view[f"{key} totals"] = (row["ledger_balance"], row["loyalty_points"],
                                     row["total_spent"], row["total_orders"])  # fmt: skip
            if live:
                profile = ("name", "email", "phone", "phone_digits", "address", "notes", "tags",
                           "credit_limit", "created_at")  # fmt: skip
                view[f"{key} profile"] = {f: row[f] for f in profile}
                entries, _ = ledger.list_entries(cid, limit=10_000)
                view[f"{key} ledger"] = [(e["id"], e["balance_after"]) for e in entries]
            else:
                leftover = {f: row[f] for f in ("email", "phone", "phone_digits", "address",
                                                "notes") if row[f] is not None}  # fmt: skip
                if row["name"] != models.ANONYMIZED_NAME or row["tags"] != "[]" or leftover:
                    problems.append(f"{node.name}: anonymized {key} keeps personal data: "
                                    f"{row['name']!r} {row['tags']} {leftover}")  # fmt: skip
                view[f"{key} profile"] = "anonymized"
                view[f"{key} ledger"] = [(e["id"], e["balance_after"]) for e in fetch_all(
                    f"SELECT id, balance_after FROM ({ledger._RUNNING}) ORDER BY created_at, id",
                    (cid,))]  # fmt: skip
            view[f"{key} ledger rows"] = fetch_all(
                "SELECT * FROM ledger_entry WHERE customer_id = ? ORDER BY id", (cid,)
            )
            view[f"{key} loyalty events"] = fetch_all(
                "SELECT * FROM loyalty_event WHERE customer_id = ? ORDER BY id", (cid,)
            )
            view[f"{key} sales"] = sale_rows
            view[f"{key} refunds"] = refund_rows
        for cid in scrubbed:
            row = fetch_one("SELECT anonymized_at FROM customer WHERE id = ?", (cid,))
            if row is not None and row["anonymized_at"] is None:
                problems.append(f"{node.name}: scrubbed customer {cid} is live again")
            for needle in sorted(self.personal.get(cid, ())):
                # The search index must forget them too.
                phrase = '"' + needle.replace('"', '""') + '"'
                search = "SELECT rowid FROM customer_fts WHERE customer_fts MATCH ?"
                if fetch_all(search, (phrase,)):
                    problems.append(f"{node.name}: search still finds {needle!r} of {cid}")
        orphans = fetch_all("SELECT 'ledger_entry' AS t, id FROM ledger_entry WHERE customer_id "
                            "NOT IN (SELECT id FROM customer) UNION ALL SELECT 'sale', id FROM "
                            "sale WHERE customer_id NOT IN (SELECT id FROM customer)")  # fmt: skip
        if orphans:
            problems.append(f"{node.name}: rows of customers it does not hold: {orphans}")
        return view

    def _check_sales(self, node: SimNode, sale_rows: list[dict], refund_rows: list[dict]) -> None:
        refunds: dict[str, list[dict]] = defaultdict(list)
        for refund in refund_rows:
            refunds[refund["sale_id"]].append(refund)
        for sale in sale_rows:
            mine = refunds[sale["id"]]
            redeemed = -sum(e["points"] for e in fetch_all(
                "SELECT points FROM loyalty_event WHERE sale_id = ? AND kind = 'redeem'",
                (sale["id"],)))  # fmt: skip
            expected = {
                "refunded_amount": sum(r["amount"] for r in mine),
                "points_restored": sum(r["points_restored"] for r in mine),
                "points_reversed": sum(r["points_reversed"] + r["points_shortfall"] for r in mine),
                "points_redeemed": redeemed,
                "discount_amount": redeemed * SETTINGS["point_value"],
            }
            actual = {k: sale[k] for k in expected}
            if actual != expected:
                self.problems.append(f"{node.name}: sale {sale['id']} counters {actual} but its "
                                     f"events give {expected}")  # fmt: skip


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- running seeds -------------------------------------------------------------------------------


class SimEnvironment:
    """Shared by many seeds: a scratch dir (tmpfs when there is one) and a migrated template."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="shopnode-sim-", dir=base))
        self.template = self.root / "template.db"
        db = peewee.SqliteDatabase(str(self.template), pragmas={"journal_mode": "wal"})
        db.connect()
        migrate(db)
        db.close()
        self.faults: Counter[str] = Counter()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def environment() -> Iterator[SimEnvironment]:
    env = SimEnvironment()
    try:
        with patched():
            yield env
    finally:
        env.close()


@dataclass
class Outcome:
    seed: int
    problems: list[str]
    trace: list[str]
    fingerprint: str
    faults: Counter[str]

    def message(self, with_trace: bool = False, limit: int = 12) -> str:
        lines = [f"seed {self.seed} failed ({len(self.problems)} problems); replay it with:",
                 "    " + REPLAY.format(seed=self.seed),
                 *("  - " + p for p in self.problems[:limit])]  # fmt: skip
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        if with_trace:
            lines += ["trace:", *self.trace]
        return "\n".join(lines)


@contextlib.contextmanager
def scenario(env: SimEnvironment, skews: list[int]) -> Iterator[Simulation]:
    """A simulation driven step by step by a test: no random faults, given clock skews."""
    global _active
    sim = Simulation(0, env.root, env.template)
    sim.fault_rate = 0.0
    sim.fixed_step_ns = SECOND
    _active = sim
    try:
        sim.start(skews)
        yield sim
    finally:
        sim.close()
        _active = None


def run_seeds(seeds: range) -> tuple[list[Outcome], Counter[str]]:
    """Run `seeds` one after another in a fresh environment (in a process of its own, when
    several stretches run side by side): the outcomes of those that failed, and the faults
    injected. Any warning is an error, as under pytest (pyproject's filterwarnings)."""
    warnings.simplefilter("error")

    async def run() -> tuple[list[Outcome], Counter[str]]:
        failed = []
        with environment() as env:
            for seed in seeds:
                outcome = await run_seed(seed, env)
                if outcome.problems:
                    failed.append(outcome)
        return failed, env.faults

    return asyncio.run(run())


async def run_seed(seed: int, env: SimEnvironment) -> Outcome:
    """Run one seed from scratch; the outcome lists the problems found (empty: all good)."""
    global _active
    sim = Simulation(seed, env.root, env.template)
    _active = sim
    try:
        sim.start()
        await sim.run()
        problems = sim.check()
        fingerprint = sim.fingerprint()
    except Exception as exc:  # noqa: BLE001 - any crash of the code under test is a finding
        problems = [*sim.problems, f"unexpected {type(exc).__name__}: {exc} "
                                   f"(at step {sim.step}: {sim.trace[-1:]})"]  # fmt: skip
        fingerprint = ""
        sim.trace.append(f"!! {type(exc).__name__}: {exc}")
        sim.trace.append(traceback.format_exc())
    finally:
        sim.close()
        _active = None
    env.faults.update(sim.faults)
    return Outcome(seed, problems, sim.trace, fingerprint, sim.faults)
