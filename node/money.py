"""Money as integer minor units: exact parsing and display by the currency's exponent."""

from __future__ import annotations

import re

# ISO 4217 minor-unit exponents of the currencies a shop is likely to use.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BDT": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
    "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "GHS": 2,
    "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3, "JOD": 3, "JPY": 0,
    "KES": 2, "KRW": 0, "KWD": 3, "LKR": 2, "MAD": 2, "MXN": 2, "MYR": 2, "NGN": 2,
    "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PEN": 2, "PHP": 2, "PKR": 2, "PLN": 2,
    "QAR": 2, "RON": 2, "RUB": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3,
    "TRY": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "VND": 0, "XAF": 0,
    "XOF": 0, "ZAR": 2,
}  # fmt: skip

CURRENCY_SYMBOLS: dict[str, str] = {
    "USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥", "CNY": "¥", "KRW": "₩",
    "NGN": "₦", "PHP": "₱", "VND": "₫", "ILS": "₪", "TRY": "₺", "UAH": "₴", "BDT": "৳",
    "PKR": "Rs ", "NPR": "Rs ", "LKR": "Rs ", "KES": "KSh ", "BRL": "R$", "ZAR": "R",
}  # fmt: skip

# Far beyond any shop's takings, well inside SQLite's and JSON's exact integer range.
MAX_AMOUNT = 10**12

_AMOUNT = re.compile(r"(\d+)(?:[.,](\d+))?")


def exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return CURRENCY_EXPONENTS.get(currency, 2)


def parse_amount(text: str, currency: str) -> int:
    """Parse '50', '50.5' or '50.25' exactly into minor units; ValueError says what is wrong."""
    digits = exponent(currency)
    match = _AMOUNT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not an amount; write it like 50 or 50.25")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > digits:
        if digits == 0:
            raise ValueError(f"{currency} amounts have no decimals; write it like 50")
        raise ValueError(f"{currency} amounts have at most {digits} decimals")
    minor = int(whole) * 10**digits + int(fraction.ljust(digits, "0") or 0)
    if minor <= 0:
        raise ValueError("the amount must be more than zero")
    if minor > MAX_AMOUNT:
        raise ValueError("that amount is too large")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Display minor units with the currency's decimals and symbol: 5025 USD -> '$50.25'."""
    digits = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**digits)
    number = f"{whole:,}" + (f".{fraction:0{digits}d}" if digits else "")
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{currency} {number}"
