"""/invite QUERY: a one-time link and QR code for a customer's own Telegram account.

The link is `https://t.me/<bot>?start=<code>`; the customer opens it (or scans the code on
the counter screen) and taps Start, and bot.customers takes it from there. A customer who
is linked already is said to be, with a button to make a new link (which replaces the old
one once used).
"""

from __future__ import annotations

import io
from typing import Any

import segno
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import ContextTypes

from bot.actions import INVITE, PICK, RELINK, REMIND, Action, parse_data
from bot.chat import respond
from bot.client import NodeClient, NodeError
from bot.confirm import EXPIRED
from bot.context import client_for, shop
from bot.lookup import command_query, find_customer
from bot.reminders import remind_one
from bot.roles import OWNER_ONLY, may_act
from bot.texts import shop_zone, when

USAGE = "Whom should I invite? Use /invite QUERY, e.g. /invite ann"


def invite_link(bot_username: str, code: str) -> str:
    return f"https://t.me/{bot_username}?start={code}"


def qr_png(link: str) -> bytes:
    """The link as a QR code PNG, big enough to scan from a counter screen or a print."""
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="png", scale=8, border=4)
    return out.getvalue()


async def invite(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Make a one-time link and QR code for a customer's own Telegram: /invite QUERY."""
    message = update.effective_message
    query = await command_query(message, USAGE)
    if not query:
        return
    client = client_for(update, context)
    customer = await find_customer(client, message, query, INVITE)
    if customer is not None:
        await offer(client, message, customer, relink=False)


async def offer(client: NodeClient, message: Message, customer: dict[str, Any],
                relink: bool) -> None:  # fmt: skip
    """Send the link and its QR code, or say the customer is linked and offer a new link."""
    try:
        made = await client.create_invite(customer["id"], relink=relink)
    except NodeError as err:
        if err.status != 409:
            raise
        since = when(err.problem.get("linked_at"), shop_zone(await client.settings()))
        button = Action(RELINK, customer["id"]).data(PICK)
        await respond(
            message,
            f"{customer['name']} has already linked their Telegram (since {since}). "
            "Make a new link? Once used, it replaces the old one.",
            InlineKeyboardMarkup([[InlineKeyboardButton("Make a new link", callback_data=button)]]),
        )
        return
    link = invite_link(message.get_bot().username, made["code"])
    until = when(made["expires_at"], shop_zone(await client.settings()))
    caption = (
        f"Telegram link for {customer['name']}: {link}\n"
        f"One use, valid until {until}. The customer opens it or scans the code and taps "
        "Start; then they see their own balance and get receipts."
    )
    await message.get_bot().send_photo(message.chat_id, photo=qr_png(link), caption=caption)
    if message.from_user is not None and message.from_user.is_bot:
        await message.edit_text(f"Link for {customer['name']} sent.")


async def on_pick(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A customer picked for /invite or /remind, or "Make a new link" tapped."""
    query = update.callback_query
    verb, action = parse_data(query.data or "")
    message = query.message
    if verb != PICK or action is None or not isinstance(message, Message):
        await query.answer(EXPIRED, show_alert=True)
        return
    if not may_act(shop(context).settings, query.from_user.id, action.kind):
        await query.answer(OWNER_ONLY, show_alert=True)
        return
    await query.answer()
    client = client_for(update, context)
    customer = await client.customer(action.customer_id)
    if action.kind == REMIND:
        await remind_one(context, client, message, customer)
    else:
        await offer(client, message, customer, relink=action.kind == RELINK)
