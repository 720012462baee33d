"""Button payloads: what a tap means, packed into Telegram's 64-byte callback_data.

Everything a Confirm button needs travels in the button itself and the message it sits on,
so nothing is lost when the bot restarts between showing a confirmation and the tap, and
the Idempotency-Key is derived from that message and action: every tap on it, and every
redelivery of a tap, sends the same key and the node records the action once.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

from telegram import Message

MAX_CALLBACK_DATA = 64
SEP = "|"

# Actions that move money or points, and need a Confirm tap.
PAY, CREDIT, DEBIT, REDEEM = "P", "C", "D", "R"
# Views that only read, reached by picking one of several matching customers.
BALANCE, LEDGER, STATEMENT = "B", "L", "S"
MONEY_KINDS = (PAY, CREDIT, DEBIT, REDEEM)
VIEW_KINDS = (BALANCE, LEDGER, STATEMENT)

CONFIRM, CANCEL, PICK = "ok", "no", "pk"


@dataclass(frozen=True)
class Action:
    """A kind of action, the customer it is for and, for money kinds, the amount or points."""

    kind: str
    customer_id: str
    amount: int = 0

    def data(self, verb: str) -> str:
        """callback_data for a button that applies `verb` (CONFIRM or PICK) to this action."""
        text = SEP.join([verb, self.kind, pack_id(self.customer_id), str(self.amount)])
        if len(text.encode()) > MAX_CALLBACK_DATA:
            raise ValueError("action does not fit in callback_data")
        return text


def parse_data(data: str) -> tuple[str, Action | None]:
    """Split callback_data into its verb and action; (verb, None) when it carries none."""
    parts = data.split(SEP)
    if len(parts) != 4 or parts[1] not in MONEY_KINDS + VIEW_KINDS or not parts[3].isdigit():
        return parts[0], None
    try:
        customer_id = unpack_id(parts[2])
    except ValueError:
        return parts[0], None
    return parts[0], Action(parts[1], customer_id, int(parts[3]))


def pack_id(customer_id: str) -> str:
    """A UUID in 22 characters; any other id as it is, marked with '~'."""
    try:
        raw = uuid.UUID(customer_id).bytes
    except ValueError:
        if SEP in customer_id:
            raise ValueError("customer id cannot be packed") from None
        return "~" + customer_id
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack_id(packed: str) -> str:
    if packed.startswith("~"):
        return packed[1:]
    if len(packed) != 22:
        raise ValueError("not a packed id")
    try:
        return str(uuid.UUID(bytes=base64.urlsafe_b64decode(packed + "==")))
    except (ValueError, TypeError):
        raise ValueError("not a packed id") from None


def confirmation_id(bot_id: int, message: Message) -> str:
    """Names a confirmation message for good: chat, id and send date (edits keep the date)."""
    return f"{bot_id}-{message.chat_id}-{message.message_id}-{int(message.date.timestamp())}"


def idempotency_key(confirmation: str, action: Action) -> str:
    """One key per action confirmed on a message: double taps and redeliveries share it.

    The action is part of the key, so a different action later shown on the same message
    (another customer picked from a stale keyboard) is a new request, not a clash.
    """
    return f"telegram-{confirmation}-{action.kind}-{pack_id(action.customer_id)}-{action.amount}"
