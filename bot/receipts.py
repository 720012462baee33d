"""Receipts: the bot follows the node's events feed and sends linked customers one short
message per sale, payment, refund or redemption, wherever it was recorded (the till, the
bot, sync).

Every `receipts_every_seconds` the bot reads the feed from the cursor the node keeps for
it, asks the node to claim each change's receipt (the node says whether one is due: a
linked customer, receipts on, a fact newer than the link; and hands out each at most once,
across restarts and bots), sends it, and moves the cursor on. A receipt Telegram did not
take is given back and the cursor stays before it, so it is tried again next round.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram.error import Forbidden, TelegramError
from telegram.ext import Application, ContextTypes

from bot.client import NodeClient, NodeError
from bot.context import shop
from bot.roles import OWNER
from bot.texts import receipt_text

log = logging.getLogger(__name__)

JOB_NAME = "receipts"
PAGE = 100
# Kinds of change that get a receipt (node/telegram.py RECEIPT_KINDS decides for sure).
RECEIPT_KINDS = {"sale.recorded", "sale.refunded", "ledger.credit", "loyalty.redeemed"}


def schedule_receipts(app: Application) -> None:
    """Follow the feed every `receipts_every_seconds`, one round at a time."""
    if app.job_queue is None:
        log.warning("receipts are off: the job queue (APScheduler) is unavailable")
        return
    app.job_queue.run_repeating(
        follow_feed, interval=shop(app).settings.receipts_every_seconds, first=0.5,
        name=JOB_NAME, job_kwargs={"max_instances": 1, "coalesce": True},
    )  # fmt: skip


async def follow_feed(context: ContextTypes.DEFAULT_TYPE) -> None:
    """One round: every receipt due since the cursor, then the cursor moved on."""
    node = shop(context).nodes.get(OWNER)
    if node is None:
        return
    try:
        await send_due_receipts(context, node)
    except NodeError as err:
        log.warning("receipts wait: the node did not answer (%s)", err.status or "down")


async def send_due_receipts(context: Any, node: NodeClient) -> None:
    cursor = await node.receipts_cursor()
    while True:
        page = await node.events(cursor, PAGE)
        if page["head"] < cursor:
            # The node went back (restored from a backup): its new facts come after its head.
            cursor = page["head"]
            continue
        for event in page["events"]:
            if event["kind"] in RECEIPT_KINDS and not await deliver(context, node, event["id"]):
                await node.set_receipts_cursor(cursor)
                return
            cursor = event["cursor"]
        await node.set_receipts_cursor(cursor)
        if len(page["events"]) < PAGE:
            return


async def deliver(context: Any, node: NodeClient, change_id: str) -> bool:
    """Send a change's receipt if one is due; False if Telegram did not take it for now."""
    claim = await node.claim_receipt(change_id)
    if not claim.get("send"):
        return True
    return await send_claimed(context, node, claim, receipt_text(claim, await node.currency()))


async def send_claimed(context: Any, node: NodeClient, claim: dict[str, Any], text: str) -> bool:
    """Send a claimed receipt or reminder; False, with the claim given back to the node, when
    Telegram did not take it for now (a customer who blocked the bot counts as sent)."""
    try:
        await context.bot.send_message(claim["telegram_user_id"], text)
    except Forbidden:
        log.info("a customer has blocked the bot; message not delivered")
    except TelegramError as exc:
        log.warning("message to a customer not delivered, retrying later: %s",
                    type(exc).__name__)  # fmt: skip
        await node.release_message(claim["message_id"])
        return False
    return True
