"""Wiring: the Application with its handlers, and running it in the node's loop or alone.

    async with bot_running(settings) as runner:   # `shopnode serve`, once the node listens
        ...                                       # runner.state: starting/offline/running/...

    await run_bot_forever(settings)               # `shopnode bot`: until SIGTERM/SIGINT

Never `run_polling()`: it owns the event loop, and the node's loop is not the bot's to own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import confirm, customers, handlers, invites, reminders
from bot.actions import CANCEL_PATTERN, CONFIRM_PATTERN, PICK_PATTERN, TELEGRAM_PICK_PATTERN
from bot.arguments import text_gate
from bot.client import NodeClient
from bot.context import Shop, attach, shop
from bot.digest import schedule_digest
from bot.receipts import schedule_receipts
from bot.roles import STAFF, commands_for, gate, role_of
from bot.settings import BotSettings

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query"]
RETRY_MAX_SECONDS = 60
OFFLINE_WARNING_EVERY = 600.0


class TokenRejected(RuntimeError):
    """Telegram refused `[bot] token` (the message never contains the token)."""


def build_application(settings: BotSettings, nodes: dict[str, NodeClient]) -> Application:
    """The bot's Application: handlers, error handler, digest job; not yet started.

    `nodes` holds a client per role the bot may act as (see BotSettings.node_tokens).
    """
    if not settings.token:
        raise ValueError("bot.token: empty; create a bot with BotFather and set its token")
    if not settings.node_url:
        raise ValueError("bot.node_url: empty; the bot needs a node's URL and API token")
    app = (
        Application.builder()
        .token(settings.token)
        .base_url(settings.bot_api_base_url)
        .base_file_url(settings.bot_api_file_url)
        .build()
    )
    attach(app.bot_data, Shop(settings, dict(nodes)))
    # Lower groups run first (one handler per group): unlisted users and group chats stop
    # at the gate and learn nothing; then text that is not valid Unicode stops.
    # Customers and strangers in private chats are served by bot.customers and stop there.
    app.add_handler(TypeHandler(Update, customers.desk), group=-3)
    app.add_handler(TypeHandler(Update, gate), group=-2)
    app.add_handler(TypeHandler(Update, text_gate), group=-1)
    commands = {
        "start": handlers.start,
        "help": handlers.help_,
        "find": handlers.find,
        "balance": handlers.balance,
        "ledger": handlers.ledger,
        "dues": handlers.dues,
        "statement": handlers.statement,
        "status": handlers.status,
        "pay": confirm.pay,
        "credit": confirm.credit,
        "debit": confirm.debit,
        "redeem": confirm.redeem,
        "invite": invites.invite,
        "remind": reminders.remind,
    }
    for name, callback in commands.items():
        app.add_handler(CommandHandler(name, callback))
    # Button payloads are routed by their full grammar (bot.actions); anything else, forged
    # or from an older version, gets a short answer and no call to the node.
    app.add_handler(CallbackQueryHandler(confirm.on_confirm, pattern=_whole(CONFIRM_PATTERN)))
    app.add_handler(CallbackQueryHandler(confirm.on_cancel, pattern=_whole(CANCEL_PATTERN)))
    app.add_handler(
        CallbackQueryHandler(invites.on_pick, pattern=_whole(TELEGRAM_PICK_PATTERN))
    )
    app.add_handler(CallbackQueryHandler(handlers.on_pick, pattern=_whole(PICK_PATTERN)))
    app.add_handler(CallbackQueryHandler(handlers.on_stale_button))
    app.add_handler(MessageHandler(filters.ALL, handlers.unknown))
    app.add_error_handler(handlers.on_error)
    schedule_digest(app)
    schedule_receipts(app)
    reminders.schedule_reminders(app)
    return app


def _whole(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    """A CallbackQueryHandler pattern that matches only when the whole payload does."""
    return lambda data: isinstance(data, str) and pattern.fullmatch(data) is not None


class BotRunner:
    """Runs the bot until cancelled, waiting out Telegram being unreachable.

    A shop without internet must keep serving its till, so in the node's process a bot that
    cannot reach Telegram retries in the background instead of failing the node's start.
    """

    def __init__(self, settings: BotSettings) -> None:
        self.settings = settings
        self.state = "stopped"  # starting, offline, running, stopping, stopped, failed
        self.application: Application | None = None
        self._running = asyncio.Event()
        self._last_offline_warning = -OFFLINE_WARNING_EVERY

    async def wait_running(self, timeout: float) -> None:
        """Wait until the bot is polling Telegram (TimeoutError if it isn't in time)."""
        await asyncio.wait_for(self._running.wait(), timeout)

    async def run(self) -> None:
        """Connect (retrying while Telegram is unreachable) and serve until cancelled."""
        keep_secrets_out_of_logs()
        delay = 1
        async with contextlib.AsyncExitStack() as stack:
            nodes = {
                role: await stack.enter_async_context(NodeClient(self.settings.node_url, token))
                for role, token in self.settings.node_tokens().items()
            }
            if self.settings.staff and STAFF not in nodes:
                log.warning(
                    "bot.staff is set but the bot has no staff token (bot.node_staff_token): "
                    "staff are refused until one is set"
                )
            while True:
                try:
                    await self._serve(build_application(self.settings, nodes))
                except InvalidToken:
                    # `from None`: PTB's own message would print the token.
                    raise TokenRejected("Telegram rejected the bot token ([bot] token)") from None
                except NetworkError as exc:
                    self.state = "offline"
                    self._warn_offline(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _serve(self, app: Application) -> None:
        self.state = "starting"
        try:
            async with app:
                await app.start()
                try:
                    # Pending updates are kept: a tap that arrived while the bot was down
                    # still counts (and its Idempotency-Key keeps it from counting twice).
                    await app.updater.start_polling(
                        allowed_updates=ALLOWED_UPDATES, error_callback=self._polling_error
                    )
                    try:
                        await _publish_commands(app)
                        self.application, self.state = app, "running"
                        self._running.set()
                        log.info("Telegram bot @%s is running", app.bot.username)
                        await asyncio.Event().wait()  # until cancelled
                    finally:
                        self.state = "stopping"
                        self._running.clear()
                        await app.updater.stop()
                finally:
                    await app.stop()
        finally:
            # Application.shutdown() skips the bot when initialize() failed half-way (no
            # network, bad token), which would leak its HTTP connections on every retry.
            await app.bot.shutdown()
            self.application = None
            if self.state != "offline":
                self.state = "stopped"

    def _polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, Conflict):
            log.error("another program is polling Telegram with this bot's token; stop it")
        else:
            self._warn_offline(exc)

    def _warn_offline(self, exc: Exception) -> None:
        # One line now and then, not a traceback every retry while the shop is offline.
        now = time.monotonic()
        if now - self._last_offline_warning >= OFFLINE_WARNING_EVERY:
            self._last_offline_warning = now
            log.warning("Telegram is unreachable (%s); the bot keeps retrying", type(exc).__name__)


async def _publish_commands(app: Application) -> None:
    """Show each listed user the command menu of their role (best effort)."""
    settings = shop(app).settings
    for user_id in sorted(settings.owners | settings.staff):
        menu = [BotCommand(n, t[:256]) for n, t in commands_for(role_of(settings, user_id))]
        try:
            await app.bot.set_my_commands(menu, scope=BotCommandScopeChat(user_id))
        except TelegramError as exc:
            # Telegram knows a chat only after the user has written to the bot once.
            log.debug("command menu not set for a user: %s", type(exc).__name__)


@contextlib.asynccontextmanager
async def bot_running(settings: BotSettings) -> AsyncIterator[BotRunner]:
    """Run the bot in the current event loop for the duration of the block."""
    runner = BotRunner(settings)
    task = asyncio.create_task(_run_logged(runner), name="telegram-bot")
    try:
        yield runner
    finally:
        task.cancel()
        await asyncio.wait([task])


async def _run_logged(runner: BotRunner) -> None:
    try:
        await runner.run()
    except TokenRejected as exc:
        log.error("%s; the bot is off, the node keeps serving", exc)
        runner.state = "failed"
    except Exception:
        log.exception("the Telegram bot stopped; the node keeps serving")
        runner.state = "failed"


async def run_bot_forever(settings: BotSettings) -> None:
    """Run the bot alone until SIGTERM/SIGINT or cancellation; raise TokenRejected if refused."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    runner = asyncio.create_task(BotRunner(settings).run(), name="telegram-bot")
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()
    finally:
        for task in (runner, stopper):
            task.cancel()
        await asyncio.wait({runner, stopper})
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


def keep_secrets_out_of_logs() -> None:
    """Raise library log levels that would write the token or customers' messages."""
    # httpx logs every request URL at INFO, and a Bot API URL contains the token.
    for name in ("httpx", "httpcore"):
        _at_least(logging.getLogger(name), logging.WARNING)
    # python-telegram-bot logs its base URL (with the token), request parameters and whole
    # updates (names, phone numbers, message texts) at DEBUG.
    _at_least(logging.getLogger("telegram"), logging.INFO)


def _at_least(logger: logging.Logger, level: int) -> None:
    target = max(level, logger.getEffectiveLevel())
    if logger.level != target:
        logger.setLevel(target)
