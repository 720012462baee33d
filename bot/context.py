"""What every handler reaches through `context.bot_data`: settings, node clients, tap outcomes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from telegram import Update

from bot.client import NodeClient
from bot.settings import BotSettings

_KEY = "shopnode"
_OUTCOMES_KEPT = 1000


class NoNodeAccess(Exception):
    """The user has no role, or the bot holds no node token for their role."""


@dataclass
class Shop:
    """The bot's view of the shop: its settings and one node client per role it may act as.

    Every call made for a Telegram user goes through `node_for(user_id)`, which uses the token
    of that user's role: the node's own staff rules then apply to staff using the bot.
    """

    settings: BotSettings
    nodes: dict[str, NodeClient]
    # Confirmation messages already confirmed or cancelled in this process, so a late Cancel tap
    # cannot claim "nothing recorded" after a Confirm went through (and vice versa).
    outcomes: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def remember(self, key: str, outcome: str) -> None:
        self.outcomes[key] = outcome
        while len(self.outcomes) > _OUTCOMES_KEPT:
            self.outcomes.popitem(last=False)

    def may_call_node(self, user_id: int) -> bool:
        role = self.settings.role_of(user_id)
        return role is not None and role in self.nodes

    def node_for(self, user_id: int) -> NodeClient:
        """The node client with the token of this user's role; never another role's."""
        role = self.settings.role_of(user_id)
        if role is None or role not in self.nodes:
            raise NoNodeAccess(role or "none")
        return self.nodes[role]


def attach(bot_data: dict, shop_: Shop) -> None:
    bot_data[_KEY] = shop_


class HasBotData(Protocol):
    @property
    def bot_data(self) -> dict: ...


def shop(context: HasBotData) -> Shop:
    """The Shop of a handler's context or of the Application itself."""
    return context.bot_data[_KEY]


def client_for(update: Update, context: HasBotData) -> NodeClient:
    """The node client for the user behind `update` (NoNodeAccess if there is none)."""
    user = update.effective_user
    if user is None:
        raise NoNodeAccess("none")
    return shop(context).node_for(user.id)
