"""Finding the one customer a query means, or asking which one with buttons."""

from __future__ import annotations

import re
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.actions import PICK, Action
from bot.arguments import command_rest, strip_quotes
from bot.chat import respond
from bot.client import NodeClient
from bot.texts import customer_label

MAX_CHOICES = 8

NO_MATCH = "No customer matches “{query}”. Try part of the name, the phone number or the email."


def is_exact(customer: dict[str, Any], query: str) -> bool:
    """The query is the whole name, the whole email or the phone number's digits."""
    wanted = query.strip().casefold()
    if wanted in (
        str(customer.get("name") or "").casefold(),
        str(customer.get("email") or "").casefold(),
    ):
        return True
    digits = re.sub(r"\D", "", query)
    return len(digits) >= 5 and digits == re.sub(r"\D", "", str(customer.get("phone") or ""))


async def command_query(message: Message, usage: str) -> str:
    """The QUERY typed after a command; '' (and `usage` told) when there is none."""
    query = strip_quotes(command_rest(message.text or ""))
    if not query:
        await message.reply_text(usage)
    return query


async def find_customer(
    node: NodeClient, message: Message, query: str, kind: str, amount: int = 0
) -> dict[str, Any] | None:
    """The one customer `query` means; otherwise reply (no match, or a keyboard) and return None.

    Picking from the keyboard continues with `kind` and `amount` (see bot.handlers.on_pick).
    """
    matches, total = await node.search_customers(query, limit=MAX_CHOICES)
    exact = [c for c in matches if is_exact(c, query)]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        await message.reply_text(NO_MATCH.format(query=query))
        return None
    text = f"{total} customers match “{query}”. Which one?"
    if total != str(len(matches)):
        text += f"\n(Showing the first {len(matches)}; type more of the name to narrow it.)"
    await respond(message, text, choices(matches, kind, amount))
    return None


def choices(customers: list[dict[str, Any]], kind: str, amount: int = 0) -> InlineKeyboardMarkup:
    """One button per customer; tapping one continues `kind` for that customer."""
    rows = [
        [
            InlineKeyboardButton(
                customer_label(c), callback_data=Action(kind, c["id"], amount).data(PICK)
            )
        ]
        for c in customers
    ]
    return InlineKeyboardMarkup(rows)
