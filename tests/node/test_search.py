"""Customer search on a shop with more matches than the count cap: every page is the one
the plain exact query gives (count every match, sort them all), X-Total-Count is exact up
to the cap and says when it is capped, and the Link headers never promise a page that is
not there."""

from __future__ import annotations

import random
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node import customers, db, tokens
from node.api.app import create_app
from node.clock import iso, uuid7
from node.config import load_config
from node.customers import COUNT_CAP
from tests.node.conftest import CUSTOMERS

FIRST = ["Ana", "ben", "Carla", "Dev", "emma", "Farid", "Gita", "Hugo", "Ines", "Jamal"]
# Surnames by how many customers carry them: Garcia is more than the cap, Nowak a few
# hundred, Okafor a handful.
SURNAMES = [("Garcia", 1150), ("Nowak", 260), ("Okafor", 12), ("Smith", 700), ("Lee", 500)]
INSERT = (
    "INSERT INTO customer(id, name, email, phone, phone_digits, tags, loyalty_points, "
    "total_spent, total_orders, created_at, updated_at, anonymized_at) "
    "VALUES (?, ?, ?, ?, ?, '[]', ?, ?, ?, ?, ?, ?)"
)
SORT_SQL = {
    "name": "name COLLATE NOCASE",
    "created_at": "created_at",
    "total_spent": "total_spent",
    "loyalty_points": "loyalty_points",
}


def shop_rows(rng: random.Random) -> list[tuple]:
    """Customers as the API stores them, in random order, with ties in every sort."""
    people = [(rng.choice(FIRST), last) for last, n in SURNAMES for _ in range(n)]
    rng.shuffle(people)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i, (first, last) in enumerate(people):
        stamp = iso(start + timedelta(minutes=i // 3))  # three customers a minute: ties
        phone = f"+1555{rng.randint(0, 9_999_999):07d}" if i % 4 else None
        if i < 5:
            phone = f"+4420987654{i}"  # five phones holding 987654
        email = f"{first.lower()}.{last.lower()}{i}@example.com" if i % 3 else None
        spent = rng.choice([0, 0, 500, 1000, rng.randint(1, 90_000)])
        rows.append((uuid7(), f"{first} {last}", email, phone, phone and phone[1:],
                     spent // 100, spent, spent // 500, stamp, stamp, None))  # fmt: skip
    for i in range(40):  # anonymized long ago; the search index still holds their name
        stamp = iso(start + timedelta(minutes=i))
        rows.append((uuid7(), "Deleted customer", None, None, None, 0, 0, 0, stamp, stamp,
                     stamp))  # fmt: skip
    return rows


@pytest.fixture
async def shop(api, node_env) -> Path:
    """The node's database holding ~2,600 customers (bulk-inserted like an import), plus
    two Garcias anonymized through the API."""
    for name in ("Zoe Garcia", "Yan Garcia"):
        customer = await api.customer(name, email=f"{name.split()[0].lower()}@garcia.example")
        await api.sale(customer["id"], 1000, "cash")
        await api.ok("DELETE", f"{CUSTOMERS}/{customer['id']}")
    path = Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    with sqlite3.connect(path, timeout=10) as conn:
        conn.executemany(INSERT, shop_rows(random.Random(7)))
    return path


def expected(path: Path, term: str, sort: str, order: str, page: int, limit: int = 20,
             digits: str | None = None) -> tuple[list[str], int]:  # fmt: skip
    """The plain exact query: count every live match, sort them all, take the page. The
    terms used here are plain ASCII, so LIKE is the same case-insensitive substring test."""
    where = "anonymized_at IS NULL AND (name LIKE :t OR email LIKE :t"
    where += " OR phone_digits LIKE :d)" if digits else ")"
    params = {"t": f"%{term}%", "d": f"%{digits}%", "limit": limit, "offset": (page - 1) * limit}
    with sqlite3.connect(path) as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM customer WHERE {where}", params).fetchone()
        ids = conn.execute(
            f"SELECT id FROM customer WHERE {where} ORDER BY {SORT_SQL[sort]} {order}, id {order} "
            "LIMIT :limit OFFSET :offset",
            params,
        ).fetchall()
    return [i for (i,) in ids], total[0]


async def listing(api, **params) -> tuple[list[str], dict]:
    response = await api.get(CUSTOMERS, params={k: str(v) for k, v in params.items()})
    assert response.status == 200, await response.text()
    return [row["id"] for row in await response.json()], dict(response.headers)


def links(headers: dict) -> dict[str, int]:
    """rel -> page number of the Link header."""
    found = re.findall(r'<[^>]*[?&]page=(\d+)[^>]*>; rel="(\w+)"', headers.get("Link", ""))
    return {rel: int(page) for page, rel in found}


@pytest.mark.parametrize("term", ["garc", "GARCIA", "nowak", "okafor", "ga"])
async def test_every_sort_gives_the_exact_query_pages(api, shop, term):
    for sort in SORT_SQL:
        for order in ("ASC", "DESC"):
            for page in (1, 2, 9):
                ids, headers = await listing(api, search=term, sort=sort, order=order, page=page)
                want, total = expected(shop, term, sort, order, page)
                assert ids == want, (term, sort, order, page)
                assert headers["X-Total-Count"] == str(min(total, COUNT_CAP))
                assert headers.get("X-Total-Count-Capped") == ("true" if total > COUNT_CAP
                                                               else None)  # fmt: skip


async def test_a_common_fragment_is_counted_up_to_the_cap(api, shop):
    _, total = expected(shop, "garc", "created_at", "DESC", 1)
    assert total == 1150  # the anonymized Garcias are not among them
    ids, headers = await listing(api, search="garc")
    assert headers["X-Total-Count"] == str(COUNT_CAP)
    assert headers["X-Total-Count-Capped"] == "true"
    assert len(ids) == 20 and links(headers) == {"next": 2}


async def test_pages_join_up_past_the_cap_and_end_where_the_matches_end(api, shop):
    seen: list[str] = []
    for page in range(1, 13):  # 100 a page: 1,150 matches end on page 12
        ids, headers = await listing(api, search="garc", limit=100, page=page)
        assert headers["X-Total-Count-Capped"] == "true"
        seen += ids
        expected_links = {"prev": page - 1} if page > 1 else {}
        if page < 12:
            expected_links["next"] = page + 1
        assert links(headers) == expected_links, page
    assert len(seen) == 1150 and len(set(seen)) == 1150
    assert seen == expected(shop, "garc", "created_at", "DESC", 1, limit=1150)[0]
    ids, headers = await listing(api, search="garc", limit=100, page=13)
    assert ids == [] and links(headers) == {"prev": 12}


async def test_a_page_ending_exactly_at_the_last_match_has_no_next(api, shop):
    # 1,150 = 23 pages of 50: page 23 is full, and nothing comes after it.
    ids, headers = await listing(api, search="garcia", limit=50, page=23)
    assert len(ids) == 50 and links(headers) == {"prev": 22}
    assert headers["X-Total-Count-Capped"] == "true"


async def test_few_matches_are_counted_exactly(api, shop):
    ids, headers = await listing(api, search="okaf")
    assert headers["X-Total-Count"] == "12" and "X-Total-Count-Capped" not in headers
    assert ids == expected(shop, "okaf", "created_at", "DESC", 1)[0]
    assert links(headers) == {}
    ids, headers = await listing(api, search="nowak", page=2)  # 260: exact, below the cap
    assert headers["X-Total-Count"] == "260" and "X-Total-Count-Capped" not in headers
    assert links(headers) == {"next": 3, "prev": 1}


async def test_phone_digits_typed_any_way(api, shop):
    for typed in ("987654", "98-76-54", "(98) 7654"):
        ids, headers = await listing(api, search=typed)
        assert headers["X-Total-Count"] == "5", typed
        assert ids == expected(shop, "987654", "created_at", "DESC", 1, digits="987654")[0]
    ids, headers = await listing(api, search="555", sort="total_spent")  # ~3/4 of the shop
    assert headers["X-Total-Count-Capped"] == "true"
    assert ids == expected(shop, "555", "total_spent", "DESC", 1, digits="555")[0]


async def test_anonymized_customers_match_nothing(api, shop):
    ids, headers = await listing(api, search="deleted cust")
    assert ids == [] and headers["X-Total-Count"] == "0"
    ids, _ = await listing(api, search="@garcia.example")
    assert ids == []


async def test_the_plain_list_is_counted_exactly_beyond_the_cap(api, shop):
    ids, headers = await listing(api, sort="name", page=3)
    want, total = expected(shop, "", "name", "ASC", 3)
    assert total == 2622 and ids == want
    assert headers["X-Total-Count"] == "2622" and "X-Total-Count-Capped" not in headers


def _search_segments(path: Path) -> int:
    """Segments of the trigram index: its pages' ids carry their segment's id from bit 37
    (FTS5's on-disk layout); ids below that are its structure and averages."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT COUNT(DISTINCT id >> 37) FROM customer_fts_data WHERE id >> 37 > 0"
        ).fetchone()[0]
    finally:
        conn.close()


async def test_serve_starts_with_the_search_index_in_one_segment(aiohttp_client, node_env):
    path = Path(node_env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    database = db.open_database(path)
    for batch in range(3):  # each commit writes a segment of its own
        with database.atomic():
            customers.create_customers([{"name": f"Jane {batch}-{i}"} for i in range(50)])
    database.close()
    assert _search_segments(path) == 3
    api = await aiohttp_client(create_app(load_config(environ=node_env)))
    assert _search_segments(path) == 1
    headers = {"Authorization": f"Bearer {tokens.create_token('owner')}"}
    response = await api.get("/api/v1/customers", params={"search": "jane"}, headers=headers)
    assert response.headers["X-Total-Count"] == "150"
