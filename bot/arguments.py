"""Reading what the user typed after a command: a customer query, an amount, a note."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

NOT_TEXT = ("That message holds characters that are not valid text (a broken emoji?). "
            "Please type it again.")  # fmt: skip

# Anything that looks like a number is taken as the amount, even when it is not a valid
# one, so "/pay ann 5.123" gets told what is wrong with 5.123 rather than "no amount".
_NUMBERISH = re.compile(r"-?[\d.,]*\d[\d.,]*")
# A lone surrogate (JSON's `\ud800`): no valid Unicode text holds one, and the node refuses it.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class AmountArgs:
    """`QUERY AMOUNT [note]`, with the amount still as typed."""

    query: str
    amount: str
    note: str


def command_rest(text: str) -> str:
    """The text after the command word: '/pay@shop_bot ann 50' -> 'ann 50'."""
    parts = text.strip().split(maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""


def split_amount(rest: str) -> AmountArgs | None:
    """Split `QUERY AMOUNT [note]`; None when there is no query or no amount.

    The query is everything before the first number after the first word, so a phone
    number can be the query ("/pay 5551234 50"). A query with spaces and digits can be
    quoted: '/pay "+1 555 1234" 50'.
    """
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end > 1:
            tokens = rest[end + 1 :].split()
            if tokens and _NUMBERISH.fullmatch(tokens[0]):
                return AmountArgs(rest[1:end].strip(), tokens[0], " ".join(tokens[1:]))
            return None
    tokens = rest.split()
    for i in range(1, len(tokens)):
        if _NUMBERISH.fullmatch(tokens[i]):
            return AmountArgs(" ".join(tokens[:i]), tokens[i], " ".join(tokens[i + 1 :]))
    return None


def parse_points(text: str) -> int:
    """A positive whole number of points; ValueError says what is wrong."""
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"'{text}' is not a number of points; write it like 100")
    points = int(text)
    if points <= 0:
        raise ValueError("the number of points must be more than zero")
    return points


def strip_quotes(query: str) -> str:
    query = query.strip()
    if len(query) >= 2 and query[0] == query[-1] == '"':
        return query[1:-1].strip()
    return query


async def text_gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop a message or button tap whose text is not valid Unicode (lone surrogates),
    before any handler puts it into a request to the node."""
    message = update.effective_message
    typed = message.text if message is not None and update.callback_query is None else None
    tapped = update.callback_query.data if update.callback_query is not None else None
    if not any(value and _LONE_SURROGATE.search(value) for value in (typed, tapped)):
        return
    if update.callback_query is not None:
        await update.callback_query.answer(NOT_TEXT)
    elif message is not None:
        await message.reply_text(NOT_TEXT)
    raise ApplicationHandlerStop
