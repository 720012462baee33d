"""The Telegram bot: the shop owner's phone as a front end to a node's HTTP API.

`shopnode serve` runs it in the node's event loop once the node listens (`bot_running`,
given the node's own URL), and `shopnode bot` runs it alone (`run_bot_forever`). Either way
it only speaks HTTP to the node.
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
