"""Money and points: /pay, /credit, /debit and /redeem, each confirmed with a button tap.

The confirmation message quotes the user's command and carries the action in its Confirm
button; the Idempotency-Key comes from the message's chat and id (bot.actions). So a double
tap, an update redelivered after a crash, or a retry after the node was unreachable, all
send the same request with the same key, and the node records it once.
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import ContextTypes

from bot.actions import (
    CANCEL,
    CONFIRM,
    CREDIT,
    DEBIT,
    MONEY_KINDS,
    PAY,
    REDEEM,
    Action,
    confirmation_id,
    idempotency_key,
    parse_data,
)
from bot.amounts import Currency, format_amount, parse_amount
from bot.arguments import command_rest, parse_points, split_amount
from bot.chat import edit, respond
from bot.client import NodeClient, NodeError
from bot.context import client_for, shop
from bot.lookup import find_customer
from bot.roles import OWNER_ONLY, may_act, owner_only
from bot.texts import balance_phrase, sentence

USAGE = {
    PAY: "/pay QUERY AMOUNT [note], e.g. /pay ann 50 or /pay 5550100 12.50 cash",
    CREDIT: "/credit QUERY AMOUNT, e.g. /credit ann 25.40",
    DEBIT: "/debit QUERY AMOUNT [note], e.g. /debit ann 120 opening balance",
    REDEEM: "/redeem QUERY POINTS, e.g. /redeem ann 100",
}
NOTE_MAX = 200
EXPIRED = "This button has expired. Please send the command again."
RETRY = " Nothing is lost: tap Confirm again and it will be recorded only once."


async def pay(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Record a payment received: /pay QUERY AMOUNT [note]."""
    await _ask_from_command(update, context, PAY)


async def credit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Record a purchase on account (buy now, pay later): /credit QUERY AMOUNT."""
    await _ask_from_command(update, context, CREDIT)


@owner_only
async def debit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Post a manual debit, such as an opening balance: /debit QUERY AMOUNT [note]."""
    await _ask_from_command(update, context, DEBIT)


async def redeem(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Redeem loyalty points for a discount: /redeem QUERY POINTS."""
    await _ask_from_command(update, context, REDEEM)


async def _ask_from_command(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str) -> None:
    message = update.effective_message
    client = client_for(update, context)
    args = split_amount(command_rest(message.text or ""))
    if args is None:
        await message.reply_text(f"Which customer and how much? Use {USAGE[kind]}")
        return
    settings = await client.settings()
    try:
        if kind == REDEEM:
            amount = parse_points(args.amount)
        else:
            amount = parse_amount(args.amount, Currency.of(settings))
    except ValueError as exc:
        await message.reply_text(f"{sentence(str(exc))} Use {USAGE[kind]}")
        return
    customer = await find_customer(client, message, args.query, kind, amount)
    if customer is not None:
        await ask(client, message, Action(kind, customer["id"], amount), customer, args.note)


async def ask(
    client: NodeClient, message: Message, action: Action, customer: dict[str, Any], note: str
) -> None:
    """Show what will be recorded, with Confirm and Cancel buttons."""
    points = int(customer.get("loyalty_points") or 0)
    if action.kind == REDEEM and action.amount > points:
        await respond(message, f"{customer['name']} has only {points} points.")
        return
    settings = await client.settings()
    buttons = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Confirm", callback_data=action.data(CONFIRM)),
                InlineKeyboardButton("Cancel", callback_data=CANCEL),
            ]
        ]
    )
    await respond(message, _question(action, customer, settings, note), buttons)


async def on_confirm(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Record the confirmed action once, then show the result and the new balance."""
    query = update.callback_query
    the_shop = shop(context)
    verb, action = parse_data(query.data or "")
    message = query.message
    if (
        verb != CONFIRM
        or action is None
        or action.kind not in MONEY_KINDS
        or not isinstance(message, Message)
    ):
        await query.answer(EXPIRED, show_alert=True)
        return
    if not may_act(the_shop.settings, query.from_user.id, action.kind):
        await query.answer(OWNER_ONLY, show_alert=True)
        return
    confirmation = confirmation_id(context.bot.id, message)
    if the_shop.outcomes.get(confirmation) == "cancelled":
        await query.answer("This was cancelled; nothing was recorded.")
        return
    client = client_for(update, context)
    try:
        key = idempotency_key(confirmation, action)
        result = await _record(client, action, note_of(message), key)
    except NodeError as err:
        if err.retryable:
            await query.answer(_clip(err.message + RETRY), show_alert=True)
            return
        await query.answer()
        await edit(message, f"❌ Not recorded. {await _refusal(client, err)}")
        return
    the_shop.remember(confirmation, "done")
    await query.answer("Recorded.")
    try:
        text = await _result_text(client, action, result)
    except NodeError:
        text = "✅ Recorded. I couldn't fetch the new balance just now; see /balance."
    await edit(message, text)


async def on_cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Drop a pending confirmation, unless it was already recorded."""
    query = update.callback_query
    the_shop = shop(context)
    message = query.message
    if not isinstance(message, Message):
        await query.answer(EXPIRED)
        return
    confirmation = confirmation_id(context.bot.id, message)
    if the_shop.outcomes.get(confirmation) == "done":
        await query.answer("It was already recorded; cancelling cannot undo it.", show_alert=True)
        return
    the_shop.remember(confirmation, "cancelled")
    await query.answer("Cancelled.")
    await edit(message, "Cancelled. Nothing was recorded.")


def _question(action: Action, customer: dict[str, Any], settings: dict[str, Any], note: str) -> str:
    """The confirmation's text: the action, and the balance or points before and after."""
    currency = Currency.of(settings)
    name = customer["name"]
    balance = int(customer.get("ledger_balance") or 0)
    if action.kind == REDEEM:
        points = int(customer.get("loyalty_points") or 0)
        discount = format_amount(action.amount * int(settings.get("point_value") or 0), currency)
        return (
            f"Redeem {action.amount} points for {name}? That is a {discount} discount.\n"
            f"{name} has {points} points; after this: {points - action.amount}."
        )
    amount = format_amount(action.amount, currency)
    after = balance + action.amount if action.kind == PAY else balance - action.amount
    lines = {
        PAY: f"Record a payment of {amount} from {name}?",
        CREDIT: f"Record a purchase on account of {amount} for {name}?",
        DEBIT: f"Post a manual debit of {amount} to {name}?",
    }[action.kind]
    if note and action.kind != CREDIT:
        lines += f"\nNote: {note[:NOTE_MAX]}"
    return (
        f"{lines}\n{name} {balance_phrase(balance, currency)} now; "
        f"after this: {balance_phrase(after, currency)}."
    )


async def _record(node: NodeClient, action: Action, note: str, key: str) -> dict[str, Any]:
    cid, amount = action.customer_id, action.amount
    if action.kind == PAY:
        description = "Payment received" + (f": {note}" if note else "")
        return await node.record_ledger_entry(cid, "credit", amount, description, key)
    if action.kind == DEBIT:
        description = "Manual debit" + (f": {note}" if note else "")
        return await node.record_ledger_entry(cid, "debit", amount, description, key)
    if action.kind == CREDIT:
        return await node.record_account_sale(cid, amount, key)
    return await node.redeem_points(cid, amount, key)


async def _result_text(node: NodeClient, action: Action, result: dict[str, Any]) -> str:
    customer = await node.customer(action.customer_id)
    currency = await node.currency()
    name = customer["name"]
    if action.kind == REDEEM:
        discount = format_amount(int(result.get("discount_amount") or 0), currency)
        left = result.get("remaining_points", customer.get("loyalty_points"))
        return (
            f"✅ Redeemed {action.amount} points for {name}: give a {discount} discount.\n"
            f"Points left: {left}."
        )
    amount = format_amount(action.amount, currency)
    done = {
        PAY: f"✅ Recorded a payment of {amount} from {name}.",
        CREDIT: f"✅ Recorded a purchase on account of {amount} for {name}"
        + (f" (receipt {result['receipt_number']})." if result.get("receipt_number") else "."),
        DEBIT: f"✅ Posted a manual debit of {amount} to {name}.",
    }[action.kind]
    now = f"{name} now {balance_phrase(int(customer.get('ledger_balance') or 0), currency)}"
    if action.kind == CREDIT and result.get("points_earned"):
        now += f" and earned {result['points_earned']} points"
    return f"{done}\n{now}."


async def _refusal(client: NodeClient, err: NodeError) -> str:
    """The node's refusal as a sentence, naming the credit left when over the limit."""
    available = err.problem.get("available_credit")
    if err.status == 409 and isinstance(available, int):
        currency = await client.currency()
        return (
            "That would go past the customer's credit limit; "
            f"available credit: {format_amount(max(available, 0), currency)}."
        )
    return err.message


def note_of(message: Message) -> str:
    """The note typed after the amount in the command this confirmation quotes."""
    command = message.reply_to_message
    args = split_amount(command_rest(command.text or "")) if command is not None else None
    return args.note[:NOTE_MAX] if args else ""


def _clip(text: str, limit: int = 200) -> str:
    """Callback answers are cut off by Telegram after 200 characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
