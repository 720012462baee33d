"""Customers on Telegram: linking their own account, and what they may see once linked.

Every private-chat update from a user who is neither owner nor staff comes here first and
stops here: a stranger can only open an invite link (`/start CODE`), a linked customer can
only reach their own account (the customer id always comes from their link on the node,
never from what they type or tap), and nobody here reaches a staff command.

    /start CODE   ask to confirm the shop and the phone's last digits, then link
    /balance      what they owe or have in credit, points and their value, last entries
    /statement    their ledger as a CSV file
    /receipts on|off, /stop (unlink), /help
"""

from __future__ import annotations

import logging
import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.amounts import Currency
from bot.arguments import command_rest, text_gate
from bot.chat import edit
from bot.client import NodeClient, NodeError
from bot.confirm import EXPIRED
from bot.context import shop
from bot.roles import OWNER, PRIVATE_BOT, REFUSAL
from bot.statement import statement_csv, statement_filename
from bot.texts import balance_text, shop_zone

log = logging.getLogger(__name__)

BALANCE_ENTRIES = 5
CODE = re.compile(r"[A-Za-z0-9_-]{16,64}")
LINK_PATTERN = re.compile(rf"lk\|({CODE.pattern})")
DECLINE = "lk|no"

INVALID = "This link is not valid. Please ask the shop for a new one."
UNREACHABLE = "Sorry, I can't reach the shop's records right now. Please try again later."
HELP = (
    "Your account at {shop}:\n"
    "/balance what you owe or have in credit, your points, your last entries\n"
    "/statement your whole account as a spreadsheet (CSV)\n"
    "/receipts on or off: a short message for each purchase and payment (now {receipts})\n"
    "/stop unlink this Telegram account"
)


async def desk(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Serve a customer or a stranger in a private chat, and stop there; owners, staff and
    group chats go on to the other handlers (bot.roles.gate refuses strangers there)."""
    user, chat = update.effective_user, update.effective_chat
    the_shop = shop(context)
    if user is None or the_shop.settings.role_of(user.id) is not None:
        return
    node = the_shop.nodes.get(OWNER)  # links are read as the owner; the gate refuses if none
    if chat is None or chat.type != ChatType.PRIVATE or node is None:
        return
    await text_gate(update, context)
    try:
        if update.callback_query is not None:
            await _on_tap(update, node, user.id)
        elif update.effective_message is not None:
            await _on_message(update.effective_message, node, user.id)
    except NodeError as err:
        log.warning("a customer's request failed at the node (%s)", err.status or "down")
        await _tell(update, UNREACHABLE)
    except Exception:
        log.exception("serving a customer failed")
        await _tell(update, "Sorry, something went wrong there. Please try again.")
    raise ApplicationHandlerStop


async def _tell(update: Update, text: str) -> None:
    if update.callback_query is not None:
        await update.callback_query.answer(text[:200], show_alert=True)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(text)


def _command(text: str) -> str:
    """'/balance@shop_bot x' -> '/balance'; '' when the text is no command."""
    word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return word.split("@", 1)[0].lower() if word.startswith("/") else ""


async def _on_message(message: Message, node: NodeClient, user_id: int) -> None:
    command, rest = _command(message.text or ""), command_rest(message.text or "")
    if command == "/start" and rest:
        await _offer_link(message, node, rest)
        return
    link = await node.link_of(user_id)
    if link is None:
        await message.reply_text(REFUSAL.format(user_id=user_id))
        return
    customer_id = link["customer_id"]
    if command == "/balance":
        customer = await node.customer(customer_id)
        entries = await node.ledger(customer_id, limit=BALANCE_ENTRIES)
        await message.reply_text(balance_text(customer, entries, await node.settings()))
    elif command == "/statement":
        customer = await node.customer(customer_id)
        entries = await node.whole_ledger(customer_id)
        settings = await node.settings()
        await message.get_bot().send_document(
            message.chat_id, document=statement_csv(entries, Currency.of(settings)),
            filename=statement_filename(customer, shop_zone(settings)),
            caption=f"Your statement: {len(entries)} entries.")  # fmt: skip
    elif command == "/receipts" and rest.lower() in ("on", "off"):
        await node.set_receipts(user_id, rest.lower() == "on")
        await message.reply_text(f"Receipts are {rest.lower()}.")
    elif command == "/stop":
        await node.unlink(user_id)
        await message.reply_text(
            "Unlinked: this Telegram account is no longer connected to your account at the "
            "shop, and you will get no more messages from me. To link again, ask the shop "
            "for a new link."
        )
    else:
        await message.reply_text(help_text(link))


async def _offer_link(message: Message, node: NodeClient, code: str) -> None:
    """Ask the customer to confirm the shop (and the phone's last digits) before linking.
    Any code that is not good now gets INVALID, whatever the reason."""
    if not CODE.fullmatch(code):
        await message.reply_text(INVALID)
        return
    try:
        invite = await node.check_invite(code)
    except NodeError as err:
        if err.status != 404:
            raise
        await message.reply_text(INVALID)
        return
    digits = invite.get("phone_last_digits")
    phone = f" (the phone number on file ends in {digits})" if digits else ""
    buttons = InlineKeyboardMarkup([[
        InlineKeyboardButton("Yes, link it", callback_data=f"lk|{code}"),
        InlineKeyboardButton("No", callback_data=DECLINE),
    ]])  # fmt: skip
    await message.reply_text(
        f"Link this Telegram account to your account at {invite['shop_name']}{phone}? "
        "You will see your own balance and get a short receipt for each purchase and "
        "payment. You can unlink at any time with /stop.",
        reply_markup=buttons,
    )


async def _on_tap(update: Update, node: NodeClient, user_id: int) -> None:
    """Only the link confirmation's own buttons mean anything here."""
    query = update.callback_query
    message = query.message
    data = query.data or ""
    match = LINK_PATTERN.fullmatch(data)
    if not isinstance(message, Message) or (match is None and data != DECLINE):
        # Another button's payload (forged, or tapped on someone else's message).
        linked = await node.link_of(user_id) is not None
        await query.answer(EXPIRED if linked else PRIVATE_BOT, show_alert=linked)
        return
    if match is None:
        await query.answer()
        await edit(message, "Nothing was linked.")
        return
    try:
        link = await node.link_account(match.group(1), user_id)
    except NodeError as err:
        if err.status != 404:
            raise
        if await node.link_of(user_id):  # a double tap: the first one linked already
            await query.answer("Already linked.")
            return
        await query.answer()
        await edit(message, INVALID)
        return
    await query.answer("Linked.")
    await edit(message, "✅ Linked. " + help_text(link))


def help_text(link: dict) -> str:
    receipts = "on" if link["receipts"] else "off"
    return HELP.format(shop=link.get("shop_name") or "the shop", receipts=receipts)

