"""Handlers for all but the money commands (bot.confirm): views, picks and the rest.

/start, /help, /find, /balance, /ledger, /dues, /statement and /status only read. A tap on a
customer picked from a list goes on with the command it came from: one of those views or, for money,
a confirmation (bot.confirm.ask). Last come the answers to stale buttons, unknown messages
and failures.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Any

from telegram import Message, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.actions import BALANCE, LEDGER, MONEY_KINDS, PICK, STATEMENT, parse_data
from bot.amounts import Currency
from bot.arguments import command_rest, strip_quotes
from bot.chat import edit, respond
from bot.client import NodeClient, NodeError
from bot.confirm import EXPIRED, ask, note_of
from bot.context import NoNodeAccess, client_for, shop
from bot.lookup import MAX_CHOICES, NO_MATCH, choices, find_customer
from bot.roles import NO_STAFF_TOKEN, OWNER_ONLY, commands_for, may_act, owner_only, role_of
from bot.statement import statement_csv, statement_filename
from bot.texts import (
    balance_text,
    customer_line,
    dues_text,
    ledger_text,
    shop_zone,
    status_text,
)

log = logging.getLogger(__name__)

BALANCE_ENTRIES = 3
LEDGER_ENTRIES = 10
DUES_SHOWN = 10


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet the user and list what their role can do."""
    await help_(update, context)


async def help_(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the commands this user's role may use."""
    role = role_of(shop(context).settings, update.effective_user.id)
    lines = [f"Shop bot, at your service ({role}). A QUERY is part of a name, a phone or an email."]
    lines += [f"/{name} {text}" for name, text in commands_for(role)]
    lines.append("Amounts are written like 50, 50.5 or 50.25.")
    await update.effective_message.reply_text("\n".join(lines))


async def find(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List customers matching a name fragment, phone or email, with balance and points."""
    message = update.effective_message
    query = _query(message)
    if not query:
        await message.reply_text("Whom should I look for? Use /find QUERY, e.g. /find ann")
        return
    client = client_for(update, context)
    matches, total = await client.search_customers(query, limit=MAX_CHOICES)
    if not matches:
        await message.reply_text(NO_MATCH.format(query=query))
        return
    currency = await client.currency()
    lines = [customer_line(c, currency) for c in matches]
    if total != str(len(matches)):
        lines.append(f"…{total} match in all; type more of the name to narrow it.")
    # A tap on a name shows that customer's balance.
    await message.reply_text("\n".join(lines), reply_markup=choices(matches, BALANCE))


async def balance(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show what a customer owes or has in credit, their points and last entries."""
    await _view_from_command(update, context, BALANCE)


async def ledger(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show a customer's recent ledger entries with the running balance."""
    await _view_from_command(update, context, LEDGER)


@owner_only
async def statement(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send a customer's whole ledger as a CSV document."""
    await _view_from_command(update, context, STATEMENT)


@owner_only
async def dues(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the customers who owe most, and for how long."""
    client = client_for(update, context)
    report = await client.receivables(limit=DUES_SHOWN)
    await update.effective_message.reply_text(dues_text(report, await client.currency()))


@owner_only
async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Show the shop node at a glance: its last backup, sync and database size."""
    report = await client_for(update, context).status()
    await update.effective_message.reply_text(status_text(report))


async def on_pick(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Continue a command with the customer picked from the keyboard."""
    query = update.callback_query
    the_shop = shop(context)
    verb, action = parse_data(query.data or "")
    message = query.message
    if verb != PICK or action is None or not isinstance(message, Message):
        await query.answer(EXPIRED, show_alert=True)
        return
    if not may_act(the_shop.settings, query.from_user.id, action.kind):
        await query.answer(OWNER_ONLY, show_alert=True)
        return
    await query.answer()
    client = client_for(update, context)
    customer = await client.customer(action.customer_id)
    if action.kind in MONEY_KINDS:
        await ask(client, message, action, customer, note_of(message))
    else:
        await _show(client, message, action.kind, customer)


async def on_stale_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer a tap on a button this bot no longer understands."""
    await update.callback_query.answer(EXPIRED, show_alert=True)


async def unknown(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer anything that is not a known command."""
    await update.effective_message.reply_text(
        "I don't know that one. Send /help to see what I can do."
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Turn any failure into one friendly sentence in the chat; never a traceback there."""
    error = context.error
    if isinstance(error, NodeError):
        text = error.message
    elif isinstance(error, NoNodeAccess):
        text = NO_STAFF_TOKEN
    else:
        # The frames help whoever fixes it; the message is left out, as it may hold data.
        frames = "".join(traceback.format_tb(error.__traceback__)) if error else ""
        log.error("handling an update failed: %s\n%s", type(error).__name__, frames)
        text = "Sorry, something went wrong there. Please try again."
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    try:
        if update.callback_query is not None:
            # It may have been answered already; an answer is only owed once.
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer()
        await context.bot.send_message(update.effective_chat.id, text)
    except TelegramError as exc:
        log.warning("could not tell the user about a failure: %s", type(exc).__name__)


async def _view_from_command(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str) -> None:
    message = update.effective_message
    query = _query(message)
    if not query:
        name = message.text.split()[0] if message.text else "/balance"
        await message.reply_text(f"Which customer? Use {name} QUERY, e.g. {name} ann")
        return
    client = client_for(update, context)
    customer = await find_customer(client, message, query, kind)
    if customer is not None:
        await _show(client, message, kind, customer)


async def _show(client: NodeClient, message: Message, kind: str, customer: dict[str, Any]) -> None:
    """Answer a view for one customer, replacing the chooser if there was one."""
    settings = await client.settings()
    if kind == STATEMENT:
        entries = await client.whole_ledger(customer["id"])
        await message.get_bot().send_document(
            message.chat_id,
            document=statement_csv(entries, Currency.of(settings)),
            filename=statement_filename(customer, shop_zone(settings)),
            caption=f"Statement of {customer['name']}: {len(entries)} entries.",
        )
        if message.from_user is not None and message.from_user.is_bot:
            await edit(message, f"Statement of {customer['name']} sent.")
        return
    if kind == BALANCE:
        entries = await client.ledger(customer["id"], limit=BALANCE_ENTRIES)
        text = balance_text(customer, entries, settings)
    else:
        entries = await client.ledger(customer["id"], limit=LEDGER_ENTRIES)
        text = ledger_text(customer, entries, settings)
    await respond(message, text)


def _query(message: Message) -> str:
    return strip_quotes(command_rest(message.text or ""))
