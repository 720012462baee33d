"""Who may use the bot and for what: owners, staff, and a closed door for everyone else."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.actions import DEBIT, REMIND, STATEMENT
from bot.context import shop
from bot.settings import OWNER, STAFF, BotSettings

log = logging.getLogger(__name__)

__all__ = ["OWNER", "STAFF", "commands_for", "gate", "may", "may_act", "owner_only", "role_of"]

# (command, what it does, the least role that may use it); /help and the menu come from here.
COMMANDS: list[tuple[str, str, str]] = [
    ("find", "QUERY: customers matching a name, phone or email", STAFF),
    ("balance", "QUERY: what they owe, their points, last entries", STAFF),
    ("pay", "QUERY AMOUNT [note]: record a payment received", STAFF),
    ("credit", "QUERY AMOUNT: record a purchase on account", STAFF),
    ("redeem", "QUERY POINTS: redeem loyalty points for a discount", STAFF),
    ("ledger", "QUERY: recent ledger entries with running balance", STAFF),
    ("invite", "QUERY: a link and QR code for the customer's own Telegram", STAFF),
    ("dues", "customers who owe most, and for how long", OWNER),
    ("statement", "QUERY: the customer's whole ledger as a CSV file", OWNER),
    ("debit", "QUERY AMOUNT [note]: post a manual debit (e.g. an opening balance)", OWNER),
    ("remind", "QUERY or overdue: a polite reminder to linked customers who owe", OWNER),
    ("status", "the shop node at a glance: last backup, sync", OWNER),
    ("help", "what I can do for you", STAFF),
]

# Actions behind owner-only commands: /debit, /statement and /remind.
OWNER_KINDS = frozenset({DEBIT, STATEMENT, REMIND})

REFUSAL = (
    "Sorry, this is a private shop bot. Your Telegram user id is {user_id}; "
    "the shop owner can add it."
)
PRIVATE_BOT = "Sorry, this is a private shop bot."
OWNER_ONLY = "Only the shop owner can do that."
PRIVATE_ONLY = "I only work in a private chat with you."
NO_STAFF_TOKEN = (
    "Sorry, the bot is not set up for staff yet: it has no staff token for the shop node. "
    "The shop owner can set [bot] node_staff_token."
)


def role_of(settings: BotSettings, user_id: int) -> str | None:
    return settings.role_of(user_id)


def may(role: str | None, least: str) -> bool:
    return role == OWNER or (role == STAFF and least == STAFF)


def may_act(settings: BotSettings, user_id: int, kind: str) -> bool:
    """Whether the user may confirm or pick an action of `kind` (see bot.actions)."""
    role = role_of(settings, user_id)
    return may(role, OWNER if kind in OWNER_KINDS else STAFF)


def commands_for(role: str | None) -> list[tuple[str, str]]:
    return [(name, text) for name, text, least in COMMANDS if may(role, least)]


async def gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop every update from an unlisted user or outside a private chat before any handler,
    and from a user whose role the bot holds no node token for (staff, when the bot runs
    alone without `[bot] node_staff_token`): the bot never calls the node for a user with
    another role's token."""
    user, chat = update.effective_user, update.effective_chat
    the_shop = shop(context)
    role = role_of(the_shop.settings, user.id) if user else None
    private = chat is not None and chat.type == ChatType.PRIVATE
    if role is not None and private and user is not None and the_shop.may_call_node(user.id):
        return
    if role is not None and private:
        if update.callback_query is not None:
            await update.callback_query.answer(NO_STAFF_TOKEN[:200], show_alert=True)
        elif update.message is not None:
            await update.message.reply_text(NO_STAFF_TOKEN)
        raise ApplicationHandlerStop
    # Callback queries need to be answered, or the client shows a spinner.
    if update.callback_query is not None:
        await update.callback_query.answer(PRIVATE_BOT if role is None else PRIVATE_ONLY)
    elif update.message is not None and user is not None:
        if role is None and private:
            log.info("refused a message from a user not in [bot] owners or staff")
            await update.message.reply_text(REFUSAL.format(user_id=user.id))
        elif role is not None:
            await update.message.reply_text(PRIVATE_ONLY)
    raise ApplicationHandlerStop


Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[Any]]


def owner_only(handler: Handler) -> Handler:
    """Let only owners through; staff get a short refusal."""

    @functools.wraps(handler)
    async def wrapper(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Any:
        user = update.effective_user
        if user is None or role_of(shop(context).settings, user.id) != OWNER:
            if update.callback_query is not None:
                await update.callback_query.answer(OWNER_ONLY, show_alert=True)
            elif update.effective_message is not None:
                await update.effective_message.reply_text(OWNER_ONLY)
            return None
        return await handler(update, context)

    return wrapper
