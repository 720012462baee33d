"""What every handler reaches through `context.bot_data`: settings, node client, tap outcomes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from bot.client import NodeClient
from bot.settings import BotSettings

_KEY = "shopnode"
_OUTCOMES_KEPT = 1000


@dataclass
class Shop:
    """The bot's view of the shop: its settings and the node it talks to."""

    settings: BotSettings
    node: NodeClient
    # Confirmation messages already confirmed or cancelled in this process, so a late Cancel tap
    # cannot claim "nothing recorded" after a Confirm went through (and vice versa).
    outcomes: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def remember(self, key: str, outcome: str) -> None:
        self.outcomes[key] = outcome
        while len(self.outcomes) > _OUTCOMES_KEPT:
            self.outcomes.popitem(last=False)


def attach(bot_data: dict, shop_: Shop) -> None:
    bot_data[_KEY] = shop_


class HasBotData(Protocol):
    @property
    def bot_data(self) -> dict: ...


def shop(context: HasBotData) -> Shop:
    """The Shop of a handler's context or of the Application itself."""
    return context.bot_data[_KEY]
