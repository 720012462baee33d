"""Amounts as the bot reads and shows them: integer minor units of the node's currency.

The node says which currency it keeps and how many decimals its minor unit has (GET
/api/v1/settings: `currency`, `currency_decimals`); the bot only adds a symbol to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# The largest amount the API takes: the `maximum` of every amount in its OpenAPI document.
MAX_AMOUNT = 10**12

SYMBOLS: dict[str, str] = {
    "USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥", "CNY": "¥", "KRW": "₩",
    "NGN": "₦", "PHP": "₱", "VND": "₫", "ILS": "₪", "TRY": "₺", "UAH": "₴", "BDT": "৳",
    "PKR": "Rs ", "NPR": "Rs ", "LKR": "Rs ", "KES": "KSh ", "BRL": "R$", "ZAR": "R",
}  # fmt: skip

_AMOUNT = re.compile(r"(\d+)(?:[.,](\d+))?")


@dataclass(frozen=True)
class Currency:
    """An ISO 4217 code and the decimals of its minor unit (USD 2, JPY 0, KWD 3)."""

    code: str
    decimals: int

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Currency:
        """The currency of the node's settings."""
        return cls(settings["currency"], int(settings["currency_decimals"]))


def parse_amount(text: str, currency: Currency) -> int:
    """Parse '50', '50.5' or '50.25' exactly into minor units; ValueError says what is wrong."""
    digits = currency.decimals
    match = _AMOUNT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not an amount; write it like 50 or 50.25")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > digits:
        if digits == 0:
            raise ValueError(f"{currency.code} amounts have no decimals; write it like 50")
        raise ValueError(f"{currency.code} amounts have at most {digits} decimals")
    minor = int(whole) * 10**digits + int(fraction.ljust(digits, "0") or 0)
    if minor <= 0:
        raise ValueError("the amount must be more than zero")
    if minor > MAX_AMOUNT:
        raise ValueError("that amount is too large")
    return minor


def format_amount(minor: int, currency: Currency) -> str:
    """Minor units with the currency's decimals and symbol: 5025 USD -> '$50.25'."""
    sign, whole, fraction = _parts(minor, currency)
    number = f"{whole:,}{fraction}"
    symbol = SYMBOLS.get(currency.code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{currency.code} {number}"


def decimal_text(minor: int, currency: Currency) -> str:
    """Minor units as a plain decimal a spreadsheet reads exactly: -5025 USD -> '-50.25'."""
    sign, whole, fraction = _parts(minor, currency)
    return f"{sign}{whole}{fraction}"


def _parts(minor: int, currency: Currency) -> tuple[str, int, str]:
    """The sign, the whole units and the '.fraction' ('' without decimals) of an amount."""
    digits = currency.decimals
    whole, fraction = divmod(abs(minor), 10**digits)
    return ("-" if minor < 0 else ""), whole, (f".{fraction:0{digits}d}" if digits else "")
