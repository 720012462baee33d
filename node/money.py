"""Money as integer minor units: the currencies a shop may keep, their decimals, the cap.

Showing and reading amounts is the clients' business (the bot's: bot/amounts.py), done with
the decimals the API reports.
"""

from __future__ import annotations

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

# Far beyond any shop's takings, well inside SQLite's and JSON's exact integer range.
MAX_AMOUNT = 10**12


def exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return CURRENCY_EXPONENTS.get(currency, 2)
