"""What the bot needs to run, as plain values (built from `[bot]` by `from_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import tzlocal

TELEGRAM_API_URL = "https://api.telegram.org"

OWNER, STAFF = "owner", "staff"


@dataclass(frozen=True)
class BotSettings:
    """Telegram token and users, the node to talk to, and the optional daily digest.

    `node_token` is an owner-role API token, used for owners only; `node_staff_token` a
    staff-role one, used for staff. Without it the bot serves staff nothing (see bot.roles).
    """

    token: str = field(repr=False)
    node_url: str
    node_token: str = field(repr=False)
    owners: frozenset[int] = frozenset()
    staff: frozenset[int] = frozenset()
    api_url: str = ""  # Bot API server; empty: Telegram's public one
    digest_time: str = ""  # "HH:MM" local 24h (node.config checks it); empty: no digest
    zone: tzinfo = field(default_factory=tzlocal.get_localzone)  # the shop's: [node] timezone
    node_staff_token: str = field(default="", repr=False)
    # Reminders to linked customers (bot.reminders) and how often receipts are looked for.
    remind_min_amount: int = 0
    remind_after_days: int = 7
    remind_every_days: int = 3
    remind_schedule: str = ""  # crontab (node.config checks it); empty: no scheduled reminders
    receipts_every_seconds: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "owners", frozenset(self.owners))
        # A user listed in both gets the larger role, so staff never narrows an owner.
        object.__setattr__(self, "staff", frozenset(self.staff) - self.owners)

    def role_of(self, user_id: int) -> str | None:
        """OWNER, STAFF, or None for a user the bot does not serve."""
        if user_id in self.owners:
            return OWNER
        if user_id in self.staff:
            return STAFF
        return None

    def node_tokens(self) -> dict[str, str]:
        """The node API token to use for each role; a role without one gets no node calls."""
        tokens = {OWNER: self.node_token, STAFF: self.node_staff_token}
        return {role: token for role, token in tokens.items() if token}

    @property
    def bot_api_base_url(self) -> str:
        """Base URL for python-telegram-bot: the token and method are appended to it."""
        return (self.api_url or TELEGRAM_API_URL).rstrip("/") + "/bot"

    @property
    def bot_api_file_url(self) -> str:
        return (self.api_url or TELEGRAM_API_URL).rstrip("/") + "/file/bot"


def from_config(
    cfg: Any,
    *,
    node_url: str | None = None,
    node_token: str | None = None,
    node_staff_token: str | None = None,
) -> BotSettings:
    """Settings from a loaded config; the node passes its own URL and tokens when in-process."""
    bot = cfg.bot
    return BotSettings(
        token=bot.token,
        node_url=node_url if node_url is not None else bot.node_url,
        node_token=node_token if node_token is not None else bot.node_token,
        node_staff_token=(
            node_staff_token if node_staff_token is not None else bot.node_staff_token
        ),
        owners=frozenset(bot.owners),
        staff=frozenset(bot.staff),
        api_url=bot.api_url,
        digest_time=bot.digest_time,
        zone=cfg.zone,
        remind_min_amount=bot.remind_min_amount,
        remind_after_days=bot.remind_after_days,
        remind_every_days=bot.remind_every_days,
        remind_schedule=bot.remind_schedule,
    )
