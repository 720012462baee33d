"""bench/run.py's shop: customers from bench/search.py's generator, the requests' search
terms and customer ids, and the same customers as a CSV to import."""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import search as search_bench
from node.csvio import IMPORT_COLUMNS


def common_fragments(rows: list[tuple], count: int) -> list[str]:
    """4-letter pieces of surnames that match the most customers (by name or email)."""
    grams: Counter[str] = Counter()
    for row in rows[:: max(1, len(rows) // 20_000)]:  # a sample ranks them well enough
        text = (row[1] + " " + (row[2] or "")).lower()
        grams.update({text[i : i + 4] for i in range(len(text) - 3)})
    pieces = {w.lower()[i : i + 4] for w in search_bench.LAST_NAMES for i in range(len(w) - 3)}
    return sorted(pieces, key=lambda g: (-grams[g], g))[:count]


def search_terms(rows: list[tuple], rng: random.Random, count: int = 16) -> list[str]:
    """Half common surname fragments, half 4 digits of real phones (the issue's searches)."""
    phones = [r[4] for r in rows if r[4] and len(r[4]) >= 7]
    digits = []
    for number in rng.sample(phones, count):
        start = rng.randint(0, len(number) - 4)
        digits.append(number[start : start + 4])
    return common_fragments(rows, count) + digits


def write_csv(rows: list[tuple], path: Path) -> None:
    """The customers as a shop would import them (the API's profile fields)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(IMPORT_COLUMNS)
        for (_id, name, email, phone, _digits, address, notes, tags, *_rest, credit_limit,
             _created, _updated) in rows:  # fmt: skip
            fields = {"name": name, "email": email, "phone": phone, "address": address,
                      "notes": notes, "tags": ";".join(json.loads(tags)),
                      "credit_limit": credit_limit}  # fmt: skip
            out.writerow(["" if fields[c] is None else fields[c] for c in IMPORT_COLUMNS])


def build_shop(customers: int, seed: int, tmp: Path, served: bool, serving_copy: bool,
               csv_file: bool) -> dict[str, Any]:  # fmt: skip
    """The shop (bench/search.py's customers): its database when `served`, a copy of it for a
    second node when `serving_copy`, a CSV of them when `csv_file`; customer ids and search
    terms for the requests."""
    from node.db import database

    rng = random.Random(seed)
    shop: dict[str, Any] = {"data_dir": tmp / "node" / "data"}
    t0 = time.perf_counter()
    if served:
        _, insert_s, rows = search_bench.build_database(shop["data_dir"] / "shop.db", customers,
                                                        seed)  # fmt: skip
        database.close()
        note = f"inserted in {insert_s:.1f} s"
        if serving_copy:  # a copy with no changes of its own to push
            shop["serving_dir"] = tmp / "serving" / "data"
            shop["serving_dir"].mkdir(parents=True)
            shutil.copy(shop["data_dir"] / "shop.db", shop["serving_dir"] / "shop.db")
    else:
        rows, note = search_bench.customer_rows(customers, rng), "not inserted"
    print(f"shop: {len(rows):,} customers generated ({note}) in {time.perf_counter() - t0:.0f} s",
          flush=True)  # fmt: skip
    shop["ids"] = [r[0] for r in rng.sample(rows, min(len(rows), 20_000))]
    shop["terms"] = search_terms(rows, rng)
    if csv_file:
        shop["csv"] = tmp / "customers.csv"
        write_csv(rows, shop["csv"])
    shop["rows"] = len(rows)
    return shop
