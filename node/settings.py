"""Vendor settings: earn rate, point value, default credit limit, currency (and, read-only,
the shop's time zone from `[node] timezone`).

The config file gives the initial values; once stored, the database copy rules and the API
changes it. Changes apply from then on: a sale keeps the points it earned when it was made.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from node import validation as v
from node.clock import current_clock
from node.db import database, fetch_all
from node.errors import Conflict
from node.models import LedgerEntry, LoyaltyEvent, Sale, Setting
from node.money import CURRENCY_EXPONENTS, exponent

MAX_EARN_RATE = Decimal(1000)


def earn_rate(value: Any) -> str:
    """Points per major currency unit: a number >= 0 with at most 4 decimals, kept exact."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number, e.g. 1 or 0.5")
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a number, e.g. 1 or 0.5") from None
    if not rate.is_finite() or rate < 0 or rate > MAX_EARN_RATE:
        raise ValueError(f"must be between 0 and {MAX_EARN_RATE}")
    if rate != rate.quantize(Decimal("0.0001")):
        raise ValueError("must have at most 4 decimals")
    return str(rate.normalize()) if rate else "0"


def currency(value: Any) -> str:
    # ASCII first: 'uſd'.upper() is 'USD' too.
    if not isinstance(value, str) or not value.isascii() or value.upper() not in CURRENCY_EXPONENTS:
        raise ValueError("must be an ISO 4217 currency code such as USD, INR or JPY")
    return value.upper()


# Any case: [Uu][Ss][Dd] for USD.
_CURRENCY = "|".join("".join(f"[{c}{c.lower()}]" for c in code) for code in CURRENCY_EXPONENTS)

FIELDS: dict[str, v.Field] = {
    # A number's decimals are not checked by the schema: JSON Schema's multipleOf 0.0001 is
    # computed in binary floating point by most validators (0.0003 would fail).
    "earn_rate": v.Field(earn_rate, {
        "type": "number", "minimum": 0, "maximum": int(MAX_EARN_RATE),
        "description": "points per major currency unit spent (floor), at most 4 decimals"}),
    "point_value": v.integer(minimum=0, maximum=1_000_000).describe("minor units per point"),
    "default_credit_limit": v.nullable(v.integer(minimum=0)).describe(
        "minor units; null: no limit"
    ),
    "currency": v.Field(currency, {
        "type": "string", "pattern": f"^(?:{_CURRENCY})$",
        "description": "ISO 4217 code, any case on input: " + ", ".join(CURRENCY_EXPONENTS)}),
}  # fmt: skip


def seed_settings(initial: dict[str, Any]) -> None:
    """Store the config's initial values for settings not stored yet."""
    with database.atomic():
        for key, value in initial.items():
            clean = FIELDS[key](value) if value is not None else None
            Setting.insert(key=key, value=json.dumps(clean)).on_conflict_ignore().execute()


def get_settings() -> dict[str, Any]:
    # Every sale and credit check reads this: hand-written SQL (bench/money.py, node/db.py).
    stored = {r["key"]: json.loads(r["value"]) for r in fetch_all("SELECT key, value FROM setting")}
    result = {"earn_rate": 1, "point_value": 10, "default_credit_limit": None, "currency": "USD"}
    result.update({k: stored[k] for k in result if k in stored})
    rate = Decimal(str(result["earn_rate"]))
    result["earn_rate"] = int(rate) if rate == rate.to_integral_value() else float(rate)
    # Read-only: clients show amounts with it, so none needs a table of currencies.
    result["currency_decimals"] = exponent(result["currency"])
    # Read-only, from `[node] timezone`: the day receipts, date filters and reports count in.
    result["timezone"] = str(current_clock().zone)
    return result


def _money_recorded() -> bool:
    return any(model.select().exists() for model in (Sale, LedgerEntry, LoyaltyEvent))


def update_settings(fields: dict[str, Any]) -> dict[str, Any]:
    with database.atomic():
        current = get_settings()["currency"]
        new = fields.get("currency", current)
        if exponent(new) != exponent(current) and _money_recorded():
            # Stored amounts are minor units of the old currency: 100 cents is not 100 yen.
            raise Conflict(
                f"amounts are already recorded in {current} ({exponent(current)} decimals); "
                f"{new} has {exponent(new)}, so switching would change every balance"
            )
        for key, value in fields.items():
            Setting.insert(key=key, value=json.dumps(value)).on_conflict(
                conflict_target=[Setting.key], preserve=[Setting.value]
            ).execute()
    return get_settings()
