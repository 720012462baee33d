"""The daily digest: at `[bot] digest_time`, the shop's time (`[node] timezone`), owners get
who owes most and for how long."""

from __future__ import annotations

import logging
from datetime import datetime

from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes

from bot.client import NodeError
from bot.context import shop
from bot.settings import OWNER
from bot.texts import dues_text

log = logging.getLogger(__name__)

JOB_NAME = "daily-digest"
DIGEST_SHOWN = 10


def schedule_digest(app: Application) -> None:
    """Run the digest every day at the configured shop time; nothing when it is off."""
    settings = shop(app).settings
    digest_time = settings.digest_time
    if not digest_time:
        return
    if app.job_queue is None:
        log.warning("bot.digest_time is set but the job queue (APScheduler) is unavailable")
        return
    at = datetime.strptime(digest_time, "%H:%M").time()
    # misfire_grace_time: a digest an hour late (machine asleep) beats no digest.
    app.job_queue.run_daily(
        send_digest,
        time=at.replace(tzinfo=settings.zone),  # DST-aware: same wall time all year
        name=JOB_NAME,
        job_kwargs={"misfire_grace_time": 3600},
    )


async def send_digest(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Send today's dues to every owner."""
    the_shop = shop(context)
    node = the_shop.nodes.get(OWNER)  # the digest goes to owners, so it reads as an owner
    if node is None:
        log.warning("daily digest skipped: the bot has no owner token for the node")
        return
    try:
        report = await node.receivables(limit=DIGEST_SHOWN)
        currency = await node.currency()
    except NodeError as err:
        log.warning("daily digest skipped: the node did not answer (%s)", err.status or "down")
        return
    text = "Daily digest\n" + dues_text(report, currency)
    for owner in sorted(the_shop.settings.owners):
        try:
            await context.bot.send_message(owner, text)
        except TelegramError as exc:
            log.warning("daily digest not delivered to an owner: %s", type(exc).__name__)
