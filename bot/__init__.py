"""The Telegram bot: the shop owner's phone as a front end to a node's HTTP API.

Run it inside the node (`bot_running` in the node's cleanup_ctx) or alone
(`run_bot_forever`, behind `shopnode bot`). Either way it only speaks HTTP to the node.
"""

from bot.app import BotRunner, TokenRejected, bot_running, run_bot_forever
from bot.settings import BotSettings, from_config

__all__ = [
    "BotRunner",
    "BotSettings",
    "TokenRejected",
    "bot_running",
    "from_config",
    "run_bot_forever",
]
