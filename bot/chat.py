"""Answering in the chat: reply to the user's command, or edit the bot's own message."""

from __future__ import annotations

from telegram import InlineKeyboardMarkup, Message
from telegram.error import BadRequest


async def respond(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit `message` if the bot sent it (a chooser being answered), else reply to it.

    A reply with buttons quotes the command: that is where a confirmation's note is read
    back from when its button is tapped (see bot.confirm.note_of).
    """
    if message.from_user is not None and message.from_user.is_bot:
        await edit(message, text, markup)
    else:
        await message.reply_text(text, reply_markup=markup, do_quote=markup is not None)


async def edit(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit a message the bot sent; editing it to what it already shows is not an error."""
    try:
        await message.edit_text(text, reply_markup=markup)
    except BadRequest as exc:
        # A double tap edits the message to the same result twice; Telegram refuses the second.
        if "not modified" not in str(exc).lower():
            raise
