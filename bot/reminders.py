"""/remind QUERY and /remind overdue (owners), and the scheduled `[bot] remind_schedule`.

The node claims each reminder before it is sent, at most one per customer per
`[bot] remind_every_days` whoever asks (node/telegram.py), so two owners asking at once,
or an owner and the schedule, send one. A reminder Telegram did not take is given back.
"""

from __future__ import annotations

import logging
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from telegram import Message, Update
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.actions import REMIND
from bot.amounts import Currency, format_amount
from bot.chat import respond
from bot.client import NodeClient, NodeError
from bot.context import client_for, shop
from bot.lookup import command_query, find_customer
from bot.receipts import send_claimed
from bot.roles import OWNER, owner_only
from bot.texts import reminder_text, sentence

log = logging.getLogger(__name__)

JOB_NAME = "scheduled-reminders"
USAGE = "Whom should I remind? Use /remind QUERY, or /remind overdue for everyone overdue."
OVERDUE = "overdue"


@owner_only
async def remind(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Remind one linked customer, or every overdue one: /remind QUERY | /remind overdue."""
    message = update.effective_message
    query = await command_query(message, USAGE)
    if not query:
        return
    client = client_for(update, context)
    if query.casefold() == OVERDUE:
        await message.reply_text(await remind_overdue(context, client))
        return
    customer = await find_customer(client, message, query, REMIND)
    if customer is not None:
        await remind_one(context, client, message, customer)


async def remind_one(context: ContextTypes.DEFAULT_TYPE, client: NodeClient, message: Message,
                     customer: dict[str, Any]) -> None:  # fmt: skip
    """Send one reminder and say how it went."""
    name = customer["name"]
    try:
        sent = await send_reminder(context, client, customer["id"])
    except NodeError as err:
        if err.status == 404:
            text = f"{name} has not linked their Telegram yet; /invite them first."
        elif err.status == 409:
            text = f"No reminder sent: {sentence(err.message)}"
        else:
            raise
        await respond(message, text)
        return
    await respond(message, f"Reminder sent to {name}." if sent else
                  f"Telegram did not take the reminder to {name}; try again later.")  # fmt: skip


async def send_reminder(context: Any, client: NodeClient, customer_id: str) -> bool:
    """Claim and send one reminder; False (and the claim given back) if Telegram refused
    it for now. NodeError when there is nothing to send (not linked, owes nothing, too soon)."""
    settings = shop(context).settings
    claim = await client.claim_reminder(customer_id, settings.remind_every_days)
    return await send_claimed(context, client, claim,
                              reminder_text(claim, await client.currency()))  # fmt: skip


async def remind_overdue(context: Any, client: NodeClient) -> str:
    """Remind every linked customer overdue per `[bot] remind_*`; a one-line report."""
    settings = shop(context).settings
    owing = await client.overdue(settings.remind_min_amount, settings.remind_after_days)
    sent = skipped = failed = 0
    for row in owing:
        try:
            if await send_reminder(context, client, row["customer_id"]):
                sent += 1
            else:
                failed += 1
        except NodeError as err:
            if err.status not in (404, 409):
                raise
            skipped += 1  # reminded recently, paid meanwhile or unlinked meanwhile
    return _report(sent, skipped, failed, Currency.of(await client.settings()), settings)


def _report(sent: int, skipped: int, failed: int, currency: Currency, settings: Any) -> str:
    text = (f"Sent {sent} reminder{'s' if sent != 1 else ''} to linked customers owing more "
            f"than {format_amount(settings.remind_min_amount, currency)} for "
            f"{settings.remind_after_days}+ days.")  # fmt: skip
    if skipped:
        text += f" {skipped} skipped (reminded in the last {settings.remind_every_days} days)."
    if failed:
        text += f" {failed} not delivered; they will be tried next time."
    return text


def schedule_reminders(app: Application) -> None:
    """Run /remind overdue on `[bot] remind_schedule` (the shop's time, `[node] timezone`);
    nothing when it is off."""
    settings = shop(app).settings
    if not settings.remind_schedule or app.job_queue is None:
        return
    trigger = CronTrigger.from_crontab(settings.remind_schedule, timezone=settings.zone)
    app.job_queue.run_custom(scheduled_reminders, job_kwargs={
        "trigger": trigger, "misfire_grace_time": 3600, "coalesce": True,
    }, name=JOB_NAME)  # fmt: skip


async def scheduled_reminders(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The scheduled run: remind the overdue, then tell the owners how many."""
    the_shop = shop(context)
    node = the_shop.nodes.get(OWNER)
    if node is None:
        log.warning("scheduled reminders skipped: the bot has no owner token for the node")
        return
    try:
        report = await remind_overdue(context, node)
    except NodeError as err:
        log.warning("scheduled reminders skipped: the node did not answer (%s)", err.status)
        return
    for owner in sorted(the_shop.settings.owners):
        try:
            await context.bot.send_message(owner, "Scheduled reminders: " + report)
        except TelegramError as exc:
            log.warning("reminder report not delivered to an owner: %s", type(exc).__name__)
