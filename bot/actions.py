"""Button payloads: what a tap means, packed into Telegram's 64-byte callback_data.

Everything a Confirm button needs travels in the button itself and the message it sits on,
so nothing is lost when the bot restarts between showing a confirmation and the tap, and
the Idempotency-Key is derived from that message and action: every tap on it, and every
redelivery of a tap, sends the same key and the node records the action once.

callback_data is typed by whoever controls the Telegram client, so it is read against the
strict grammar below (the only place it is defined) and anything else is refused before
the node is asked anything:

    ok|KIND|ID|N    Confirm: KIND one of P C D R (money), N a whole number 1..MAX_NUMBER
    pk|KIND|ID|N    Pick a customer: KIND one of P C D R (N as above) or B L S I J M (N is 0)
    no              Cancel

ID is a customer's UUID as 22 characters of unpadded URL-safe base64; nothing else is an
id, so no payload can put text of its choosing into a URL.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass

from telegram import Message

from bot.amounts import MAX_AMOUNT

MAX_CALLBACK_DATA = 64
SEP = "|"

# Actions that move money or points, and need a Confirm tap.
PAY, CREDIT, DEBIT, REDEEM = "P", "C", "D", "R"
# Views that only read, reached by picking one of several matching customers.
BALANCE, LEDGER, STATEMENT = "B", "L", "S"
# Customers on Telegram (bot.invites, bot.reminders): invite, invite again, remind.
INVITE, RELINK, REMIND = "I", "J", "M"
MONEY_KINDS = (PAY, CREDIT, DEBIT, REDEEM)
TELEGRAM_KINDS = (INVITE, RELINK, REMIND)
VIEW_KINDS = (BALANCE, LEDGER, STATEMENT, *TELEGRAM_KINDS)

CONFIRM, CANCEL, PICK = "ok", "no", "pk"

# The largest amount (minor units) or number of points a button may carry: the API's cap.
MAX_NUMBER = MAX_AMOUNT

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_PACKED_ID = r"[A-Za-z0-9_-]{21}[AQgw]"  # 128 bits: the last character holds 2 bits + 4 zeros
_NUMBER = rf"0|[1-9][0-9]{{0,{len(str(MAX_NUMBER)) - 1}}}"
_MONEY = "".join(MONEY_KINDS)
_VIEW = "".join(VIEW_KINDS)
# Full-match patterns: a payload is one of these or nothing at all.
CONFIRM_PATTERN = re.compile(rf"(ok)\|([{_MONEY}])\|({_PACKED_ID})\|({_NUMBER})")
PICK_PATTERN = re.compile(rf"(pk)\|([{_MONEY}{_VIEW}])\|({_PACKED_ID})\|({_NUMBER})")
CANCEL_PATTERN = re.compile(r"no")
TELEGRAM_PICK_PATTERN = re.compile(rf"(pk)\|([{''.join(TELEGRAM_KINDS)}])\|({_PACKED_ID})\|(0)")


@dataclass(frozen=True)
class Action:
    """A kind of action, the customer it is for and, for money kinds, the amount or points."""

    kind: str
    customer_id: str
    amount: int = 0

    def data(self, verb: str) -> str:
        """callback_data for a button that applies `verb` (CONFIRM or PICK) to this action."""
        text = SEP.join([verb, self.kind, pack_id(self.customer_id), str(self.amount)])
        if parse_data(text) != (verb, self):
            raise ValueError("action does not fit the button grammar")
        if len(text.encode()) > MAX_CALLBACK_DATA:
            raise ValueError("action does not fit in callback_data")
        return text


def parse_data(data: str) -> tuple[str, Action | None]:
    """The verb and action of a Confirm or Pick payload; ("", None) for anything else.

    Money kinds carry 1..MAX_NUMBER, views carry 0; the id must be a packed UUID.
    """
    if not isinstance(data, str) or len(data) > MAX_CALLBACK_DATA:
        return "", None
    match = CONFIRM_PATTERN.fullmatch(data) or PICK_PATTERN.fullmatch(data)
    if match is None:
        return "", None
    verb, kind, packed, number = match.groups()
    amount = int(number)
    if amount > MAX_NUMBER or (amount == 0) != (kind in VIEW_KINDS):
        return "", None
    try:
        customer_id = unpack_id(packed)
    except ValueError:
        return "", None
    return verb, Action(kind, customer_id, amount)


def is_cancel(data: str) -> bool:
    return isinstance(data, str) and CANCEL_PATTERN.fullmatch(data) is not None


def pack_id(customer_id: str) -> str:
    """A customer's UUID in 22 characters; ValueError for anything that is not a UUID."""
    return base64.urlsafe_b64encode(uuid.UUID(canonical_id(customer_id)).bytes).decode()[:22]


def unpack_id(packed: str) -> str:
    """The UUID packed by `pack_id`; ValueError for anything else."""
    if not re.fullmatch(_PACKED_ID, packed):
        raise ValueError("not a packed id")
    return str(uuid.UUID(bytes=base64.urlsafe_b64decode(packed + "==")))


def canonical_id(customer_id: object) -> str:
    """A customer id in the node's form (lowercase, hyphenated UUID); ValueError otherwise.

    Only this form goes into a URL path: it has no '/', '?', '%', '.' or anything else a
    path could be bent with.
    """
    if not isinstance(customer_id, str) or not _UUID.fullmatch(customer_id):
        raise ValueError("not a customer id")
    return str(uuid.UUID(customer_id))


def confirmation_id(bot_id: int, message: Message) -> str:
    """Names a confirmation message for good: chat, id and send date (edits keep the date)."""
    return f"{bot_id}-{message.chat_id}-{message.message_id}-{int(message.date.timestamp())}"


def idempotency_key(confirmation: str, action: Action) -> str:
    """One key per action confirmed on a message: double taps and redeliveries share it.

    The action is part of the key, so a different action later shown on the same message
    (another customer picked from a stale keyboard) is a new request, not a clash.
    """
    return f"telegram-{confirmation}-{action.kind}-{pack_id(action.customer_id)}-{action.amount}"
