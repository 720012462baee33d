"""Customer search on a realistic shop database: our trigram search vs a plain LIKE scan.

Builds a throwaway shop database (the real schema, via node.db.open_database) holding
--customers customers, then on that one database in this one run measures:

  1. node.customers.list_customers(search=...) per kind of search term, in process;
  2. the baseline: the same list query (count + first page) with a plain
     `LIKE '%term%'` over name/email/phone instead of the index, and the ratio;
  3. the same searches through HTTP: the node app served on 127.0.0.1 (free port) by an
     aiohttp AppRunner in this process, GET /api/v1/customers?search=... one at a time;
  4. EXPLAIN QUERY PLAN of the statements list_customers runs.

Run: python bench/search.py [--customers 100000] [--queries 100] [--seed 1]
Everything lives in a temporary directory that is removed at the end; the only network
traffic is to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a clean checkout without installing the package
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.common import load_average, machine_line, percentile, table  # noqa: E402
from node import customers, derive, tokens  # noqa: E402
from node import validation as v  # noqa: E402
from node.api.app import create_app  # noqa: E402
from node.clock import iso, uuid7  # noqa: E402
from node.config import load_config  # noqa: E402
from node.db import open_database  # noqa: E402

# --------------------------------------------------------------------------- data

FIRST_NAMES = """
James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara Richard
Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa Matthew Betty
Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua
Michelle Maria José Juan Carlos Luis Ana Sofía Lucía Mateo Valentina Diego Camila Mohammed
Ahmed Fatima Aisha Omar Yusuf Layla Hassan Priya Rahul Amit Sunita Anjali Vikram Deepak Kavya
Arjun Neha Ravi Pooja Wei Li Ming Hui Jun Mei Hiroshi Yuki Sakura Kenji Olga Ivan Dmitri Anna
Katarzyna Piotr Lukas Hannah Emma Noah Liam Olivia Chloe Léa Amara Chinedu Ngozi Kwame Abebe
Zanele Thabo Björn Søren Zoë Renée
""".split()

LAST_NAMES = """
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris
Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill
Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Patel Sharma
Singh Kumar Gupta Reddy Iyer Khan Ali Hussain Rahman Chowdhury Ahmed Siddiqui Malik Wang Zhang
Chen Liu Yang Huang Tanaka Suzuki Sato Kim Park Choi Müller Schmidt Schneider Fischer Weber
Kowalski Nowak Novak Ivanov Petrov Rossi Russo Ferrari Esposito Silva Santos Oliveira Pereira
Okafor Mensah Okonkwo Dlamini Haile O'Brien Murphy Kelly Van-der-Berg D'Souza
""".split()

EMAIL_DOMAINS = [
    ("gmail.com", 35), ("yahoo.com", 12), ("outlook.com", 10), ("hotmail.com", 9),
    ("icloud.com", 6), ("proton.me", 2), ("aol.com", 2), ("mail.ru", 2), ("yandex.com", 1),
    ("rediffmail.com", 2), ("gmx.de", 2), ("sunrise-foods.in", 1), ("acme-traders.com", 1),
    ("kiranastore.co.in", 1), ("northwind.example", 1),
]  # fmt: skip

STREETS = """Main Oak Pine Maple Cedar Elm Station Market Church Mill Park Lake Hill Gandhi
Nehru Jinnah Victoria Harbour Bazaar""".split()
STREET_KINDS = ["Street", "Road", "Avenue", "Lane", "Marg", "Nagar", "Way"]
CITIES = """Springfield Mumbai Karachi Lagos Leeds Austin Pune Lahore Nairobi Dhaka Manila
Accra Toronto Porto Kraków""".split()


def ascii_word(text: str) -> str:
    """'José' -> 'jose', "O'Brien" -> 'obrien' (what people type into an email address)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def digits(rng: random.Random, n: int, first: str = "123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def raw_phone(rng: random.Random) -> str:
    """A phone number as a person would type it, in one of several national formats."""
    a, b, c = digits(rng, 3, "23456789"), digits(rng, 3), digits(rng, 4, "0123456789")
    kind = rng.choices(range(11), weights=[12, 10, 6, 5, 4, 14, 8, 6, 5, 8, 4])[0]
    if kind == 0:
        return f"+1 ({a}) {b}-{c}"
    if kind == 1:
        return f"({a}) {b}-{c}"
    if kind == 2:
        return f"{a}-{b}-{c}"
    if kind == 3:
        return f"{a}.{b}.{c}"
    if kind == 4:
        return f"+1 {a} {b} {c}"
    if kind == 5:
        m = digits(rng, 10, "6789")
        return f"+91 {m[:5]} {m[5:]}"
    if kind == 6:
        return "0" + digits(rng, 10, "6789")
    if kind == 7:
        return f"+44 20 {digits(rng, 4)} {digits(rng, 4, '0123456789')}"
    if kind == 8:
        return f"07{digits(rng, 3)} {digits(rng, 6, '0123456789')}"
    if kind == 9:
        return f"03{rng.randint(0, 4)}{rng.randint(0, 9)}-{digits(rng, 7)}"
    return f"+1 ({a}) {b}-{c[:3]}"  # node.validation.phone's example: +1 (234) 567-890


def make_email(rng: random.Random, first: str, last: str) -> str:
    f, last_ = ascii_word(first), ascii_word(last)
    domain = rng.choices([d for d, _ in EMAIL_DOMAINS], [w for _, w in EMAIL_DOMAINS])[0]
    local = rng.choice([
        f"{f}.{last_}",
        f"{f}.{last_}{rng.randint(1, 999)}",
        f"{f[0]}{last_}",
        f"{f}{last_[0]}{rng.randint(60, 99):02d}",
        f"{f}_{last_}",
        f"{last_}.{f}{rng.randint(1, 99)}",
    ])  # fmt: skip
    return v.email(f"{local}@{domain}")


def customer_rows(n: int, rng: random.Random) -> list[tuple]:
    """n customer rows shaped exactly as node.customers.create_customer stores them."""
    start = time.time() - 3 * 365 * 86400
    stamps = sorted(start + rng.random() * 3 * 365 * 86400 for _ in range(n))
    rows = []
    for stamp in stamps:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        name = f"{first} {last}" if rng.random() > 0.03 else first  # some shops know a first name
        email = make_email(rng, first, last) if rng.random() < 0.75 else None
        phone = v.phone(raw_phone(rng)) if rng.random() < 0.9 else None  # as the API stores it
        address = None
        if rng.random() < 0.5:
            street = f"{rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
            address = f"{rng.randint(1, 999)} {street}, {rng.choice(CITIES)}"
        tags = rng.choices([[], ["vip"], ["wholesale"], ["khata"], ["vip", "khata"]],
                           [80, 6, 5, 7, 2])[0]  # fmt: skip
        orders = int(rng.expovariate(1 / 8))
        spent = sum(rng.randint(200, 8000) for _ in range(min(orders, 50)))
        created = iso(datetime.fromtimestamp(stamp, UTC))
        rows.append((
            uuid7(), name, email, phone, derive.phone_digits(phone), address,
            "prefers delivery" if rng.random() < 0.02 else None, json.dumps(tags),
            spent // 100, spent, orders,
            -rng.randint(0, 50_000) if "khata" in tags else 0,
            rng.choice([None, 100_000]) if "khata" in tags else None,
            created, created,
        ))  # fmt: skip
    return rows


INSERT = (
    "INSERT INTO customer(id, name, email, phone, phone_digits, address, notes, tags, "
    "loyalty_points, total_spent, total_orders, ledger_balance, credit_limit, created_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def build_database(path: Path, n: int, seed: int) -> tuple[float, float, list[tuple]]:
    """Create the shop db with n customers; returns (generate s, insert s, rows)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    rows = customer_rows(n, rng)
    t1 = time.perf_counter()
    db = open_database(path)
    conn = db.connection()
    with db.atomic():
        for i in range(0, len(rows), 10_000):
            conn.executemany(INSERT, rows[i : i + 10_000])  # the FTS triggers fill the index
    t2 = time.perf_counter()
    # No ANALYZE: a node never runs it, so the plans measured here are the ones it gets.
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # measure a settled file, not a big WAL
    return t1 - t0, t2 - t1, rows


# --------------------------------------------------------------------------- search terms

NAME, EMAIL, PHONE, BROAD, TWO, NOMATCH = (
    "name fragment",
    "email fragment",
    "phone, typed formatted",
    "common 3-letter fragment",
    "2-char (LIKE fallback)",
    "no match",
)
KINDS = [NAME, EMAIL, PHONE, BROAD, TWO, NOMATCH]
PAGE, PAGE_SPENT = "page (no search)", "page, sort=total_spent"


def fragment(rng: random.Random, word: str, lo: int, hi: int) -> str:
    size = min(len(word), rng.randint(lo, hi))
    start = rng.randint(0, len(word) - size)
    return word[start : start + size]


def search_terms(rows: list[tuple], count: int, seed: int) -> dict[str, list[str]]:
    """`count` terms per kind, drawn from the customers actually in the database."""
    rng = random.Random(seed + 1)
    terms: dict[str, list[str]] = {kind: [] for kind in KINDS}
    with_email = [r for r in rows if r[2]]
    with_phone = [r for r in rows if r[4] and len(r[4]) >= 9]
    for _ in range(count):
        word = max(rng.choice(rows)[1].split(), key=len)
        text = fragment(rng, word, 3, 6) if len(word) >= 3 else "Patel"
        terms[NAME].append(text.lower() if rng.random() < 0.6 else text)
        local = rng.choice(with_email)[2].split("@")[0]
        terms[EMAIL].append(fragment(rng, local, 5, 9))
        number = rng.choice(with_phone)[4]
        start = rng.randint(0, len(number) - 7)
        a, b = number[start : start + 3], number[start + 3 : start + 7]
        shape = rng.choice(["{a}-{b}", "{a} {b}", "({a}) {b}", "{a}.{b}", "{a}-{b3}"])
        terms[PHONE].append(shape.format(a=a, b=b, b3=b[:3]))
        terms[BROAD].append(rng.choice(["son", "ann", "mar", "ali", "han", "ell", "ara", "gma"]))
        terms[TWO].append(rng.choice(["jo", "an", "li", "ra", "ma", "el", "ch", "98", "55", "07"]))
        terms[NOMATCH].append("".join(rng.choice("qxzjvw") for _ in range(rng.randint(4, 7))))
    return terms


# --------------------------------------------------------------------------- measuring


def summary(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), percentile(samples, 95)


def timed(call: Callable[[str], int], terms: list[str], warmup: int = 10) -> tuple[list, list]:
    """Milliseconds per call and the match count of each; a few untimed calls first."""
    for term in terms[:warmup]:
        call(term)
    times, counts = [], []
    for term in terms:
        t0 = time.perf_counter()
        counts.append(call(term))
        times.append((time.perf_counter() - t0) * 1000)
    return times, counts


def ours(term: str, sort: str = "created_at") -> int:
    return customers.list_customers(search=term, sort=sort)[1]


def like_scan(conn: sqlite3.Connection) -> Callable[[str], int]:
    """The baseline: the same count + first page, but a LIKE '%term%' scan over the columns."""
    where = (
        "c.anonymized_at IS NULL AND (c.name LIKE ? ESCAPE '\\' OR c.email LIKE ? ESCAPE '\\' "
        "OR c.phone LIKE ? ESCAPE '\\')"
    )
    count_sql = f"SELECT COUNT(*) FROM customer c WHERE {where}"
    page_sql = (
        f"SELECT {customers.COLUMNS} FROM customer c WHERE {where} "
        "ORDER BY c.created_at DESC, c.id DESC LIMIT 20 OFFSET 0"
    )

    def run(term: str) -> int:
        pattern = customers._like(term.strip())
        total = conn.execute(count_sql, (pattern,) * 3).fetchone()[0]
        conn.execute(page_sql, (pattern,) * 3).fetchall()
        return total

    return run


def captured_statements(call: Callable[[], Any]) -> list[tuple[str, list]]:
    """The SQL (and parameters) list_customers runs, by recording its fetch helpers."""
    seen: list[tuple[str, list]] = []
    originals = customers.fetch_one, customers.fetch_all

    def recorder(original):
        def wrapped(sql, params=()):
            seen.append((sql, list(params)))
            return original(sql, params)

        return wrapped

    customers.fetch_one, customers.fetch_all = recorder(originals[0]), recorder(originals[1])
    try:
        call()
    finally:
        customers.fetch_one, customers.fetch_all = originals
    return seen


def query_plans(db) -> list[tuple[str, list[str]]]:
    cases = [
        ("list page (no search), sort=created_at", {}),
        ("list page, sort=total_spent", {"sort": "total_spent"}),
        ("search 'garc' (trigram)", {"search": "garc"}),
        ("search 'garc', sort=total_spent", {"search": "garc", "sort": "total_spent"}),
        ("search '234-567' (phone)", {"search": "234-567"}),
        ("search 'jo' (2 chars: LIKE)", {"search": "jo"}),
    ]
    plans = []
    for label, kwargs in cases:
        for sql, params in captured_statements(lambda kw=kwargs: customers.list_customers(**kw)):
            rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            kind = "page " if customers.JSON_ROW in sql else "count"
            plans.append((f"{label} [{kind}]", [detail for *_, detail in rows]))
    return plans


# --------------------------------------------------------------------------- HTTP


async def http_phase(
    data_dir: Path, terms: dict[str, list[str]], expected: dict[str, list[int]]
) -> dict[str, tuple[float, float, float]]:
    """Serve the node app on 127.0.0.1 and time GET /api/v1/customers one request at a time."""
    config_file = data_dir.parent / "empty.toml"  # no ./shopnode.toml or $SHOPNODE_CONFIG leaks in
    config_file.write_text("")
    config = load_config(
        config_file, environ={"SHOPNODE_NODE_DATA_DIR": str(data_dir), "SHOPNODE_API_PORT": "0"}
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()  # runs the app's start-up: opens the prebuilt database
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    headers = {"Authorization": f"Bearer {tokens.create_token('bench-search')}"}
    results: dict[str, tuple[float, float, float]] = {}
    mismatches = 0
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(base, headers=headers) as session:

            async def get(params: dict[str, str]) -> int:
                async with session.get("/api/v1/customers", params=params) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"GET {params} -> {response.status}")
                    return int(response.headers["X-Total-Count"])

            async def measure(param_list: list[dict[str, str]]) -> tuple[list, list]:
                for params in param_list[:10]:
                    await get(params)
                times, counts = [], []
                for params in param_list:
                    t0 = time.perf_counter()
                    counts.append(await get(params))
                    times.append((time.perf_counter() - t0) * 1000)
                return times, counts

            n = len(next(iter(terms.values())))
            for label, params in [
                (PAGE, {"limit": "20"}),
                (PAGE_SPENT, {"limit": "20", "sort": "total_spent"}),
            ]:
                times, counts = await measure([params] * n)
                results[label] = (*summary(times), counts[0])
            for kind in KINDS:
                times, counts = await measure([{"search": t} for t in terms[kind]])
                mismatches += sum(a != b for a, b in zip(counts, expected[kind], strict=True))
                results[kind] = (*summary(times), statistics.median(counts))
    finally:
        await runner.cleanup()
    if mismatches:
        print(f"WARNING: {mismatches} HTTP totals differ from the in-process totals")
    return results


# --------------------------------------------------------------------------- report


def ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers to create")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per kind")
    parser.add_argument("--seed", type=int, default=1, help="random seed for data and terms")
    args = parser.parse_args()
    if args.customers < 100 or args.queries < 1:
        parser.error("need --customers >= 100 and --queries >= 1")

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="shopnode-bench-search-") as tmp:
        data_dir = Path(tmp) / "data"
        path = data_dir / "shop.db"
        generate_s, insert_s, rows = build_database(path, args.customers, args.seed)
        size_mb = path.stat().st_size / 1e6
        print(
            f"built {args.customers:,} customers: generated in {generate_s:.1f} s, inserted "
            f"(executemany, FTS triggers) in {insert_s:.1f} s = "
            f"{args.customers / insert_s:,.0f} rows/s; database {size_mb:.0f} MB"
        )
        terms = search_terms(rows, args.queries, args.seed)
        del rows

        from node.db import checkpoint, database

        checkpoint()  # the search index in one segment, as `shopnode serve` starts with it
        db = database.obj
        # The baseline runs on the same sqlite3 connection, straight (no peewee in the loop).
        baseline = like_scan(db.connection())
        inproc: dict[str, tuple] = {}
        for kind in KINDS:
            ours_t, ours_n = timed(ours, terms[kind])
            like_t, like_n = timed(baseline, terms[kind])
            inproc[kind] = (ours_t, ours_n, like_t, like_n)
        extra = {}
        for label, call in [
            (PAGE, lambda _t: customers.list_customers()[1]),
            (PAGE_SPENT, lambda _t: customers.list_customers(sort="total_spent")[1]),
            ("name fragment, sort=total_spent", lambda t: ours(t, "total_spent")),
        ]:
            extra[label] = timed(call, terms[NAME])
        plans = query_plans(db)
        db.close()

        print(
            f"\nIn process, {args.queries} queries per kind (count + first page of 20, "
            "as the API does); ms"
        )
        out = []
        for kind in KINDS:
            ours_t, ours_n, like_t, like_n = inproc[kind]
            o50, o95 = summary(ours_t)
            l50, l95 = summary(like_t)
            worst = max(range(len(ours_t)), key=ours_t.__getitem__)
            out.append([
                kind, f"{statistics.median(ours_n):.0f}", ms(o50), ms(o95),
                f"{statistics.median(like_n):.0f}", ms(l50), ms(l95), f"{l50 / o50:.1f}x",
                f"{terms[kind][worst]!r} {ms(ours_t[worst])} ms, {ours_n[worst]} rows",
            ])  # fmt: skip
        print(table(
            ["query kind", "matches p50", "ours p50", "ours p95", "LIKE matches p50",
             "LIKE p50", "LIKE p95", "LIKE/ours", "our slowest"],
            out, left=(0, 8),
        ))  # fmt: skip
        print("\nOther list calls, in process (ms)")
        print(table(
            ["call", "p50", "p95"],
            [[label, *map(ms, summary(times))] for label, (times, _) in extra.items()],
        ))  # fmt: skip

        expected = {kind: inproc[kind][1] for kind in KINDS}
        http = asyncio.run(http_phase(data_dir, terms, expected))
        print(
            f"\nThrough HTTP (node app on 127.0.0.1, one request at a time, client in the same "
            f"process), {args.queries} requests per row; ms"
        )
        out = []
        for label, (p50, p95, matches) in http.items():
            local = inproc[label][0] if label in inproc else extra[label][0]
            out.append([label, f"{matches:.0f}", ms(p50), ms(p95), ms(summary(local)[0])])
        header = ["GET /api/v1/customers", "matches p50", "HTTP p50", "HTTP p95", "in-process p50"]
        print(table(header, out))

        print(f"load average now: {load_average()}")
        print("\nEXPLAIN QUERY PLAN of what list_customers runs")
        for label, details in plans:
            print(f"  {label}")
            for detail in details:
                print(f"      {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
