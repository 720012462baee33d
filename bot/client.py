"""The node's /api/v1 as the bot sees it: a few calls, and every failure as a friendly sentence."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from bot.actions import canonical_id
from bot.amounts import Currency
from bot.texts import sentence

# Settings change rarely (currency, point value); reading them once per command is wasteful.
SETTINGS_TTL_SECONDS = 30.0
TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
LEDGER_PAGE_LIMIT = 100  # the API's cap


class NodeError(Exception):
    """A request the node refused or could not answer; `message` is fit to show the user."""

    def __init__(self, message: str, status: int = 0, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem or {}

    @property
    def retryable(self) -> bool:
        """True when the outcome is unknown or temporary, so the same request may be resent."""
        return self.status == 0 or self.status >= 500


def _checked_id(customer_id: str) -> str:
    """The id in the node's UUID form; a NodeError (and no request) for anything else."""
    try:
        return canonical_id(customer_id)
    except ValueError:
        raise NodeError(NOT_A_CUSTOMER, 400) from None


def _customer_path(customer_id: str, rest: str = "") -> str:
    """`/customers/{id}{rest}` for a well-formed customer id only; never text from elsewhere."""
    return f"/customers/{_checked_id(customer_id)}{rest}"


NOT_A_CUSTOMER = "That is not a customer I know. Please send the command again."


class NodeClient:
    """HTTP client for one node, authenticated with one API token (one per role)."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base = base_url.rstrip("/") + "/api/v1"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None
        self._settings: tuple[float, dict[str, Any]] | None = None

    async def __aenter__(self) -> NodeClient:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT, headers=self._headers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Reads

    async def search_customers(self, query: str, limit: int = 10) -> tuple[list[dict], str]:
        """Customers whose name, phone or email contains `query`, and how many match in all,
        as the shop reads it: "12", or "over 1000" when the node capped its count."""
        params = {"search": query, "limit": str(limit), "sort": "name", "order": "ASC"}
        body, headers = await self._request("GET", "/customers", params=params)
        total = headers.get("X-Total-Count", "")
        if not total.isdigit():
            return body, str(len(body))
        return body, f"over {total}" if headers.get("X-Total-Count-Capped") else total

    async def customer(self, customer_id: str) -> dict[str, Any]:
        body, _ = await self._request("GET", _customer_path(customer_id))
        return body

    async def ledger(self, customer_id: str, limit: int = 10, page: int = 1) -> list[dict]:
        """Ledger entries, newest first."""
        params = {"limit": str(limit), "page": str(page)}
        path = _customer_path(customer_id, "/ledger")
        body, _ = await self._request("GET", path, params=params)
        return body

    async def whole_ledger(self, customer_id: str, max_pages: int = 1000) -> list[dict]:
        """Every ledger entry of a customer, newest first."""
        entries: list[dict] = []
        for page in range(1, max_pages + 1):
            batch = await self.ledger(customer_id, limit=LEDGER_PAGE_LIMIT, page=page)
            entries.extend(batch)
            if len(batch) < LEDGER_PAGE_LIMIT:
                break
        return entries

    async def settings(self) -> dict[str, Any]:
        """Vendor settings (currency, point value), cached for a short while."""
        now = time.monotonic()
        if self._settings is None or now - self._settings[0] > SETTINGS_TTL_SECONDS:
            body, _ = await self._request("GET", "/settings")
            self._settings = (now, body)
        return self._settings[1]

    async def currency(self) -> Currency:
        """The currency the node keeps amounts in, as its settings report it."""
        return Currency.of(await self.settings())

    async def status(self) -> dict[str, Any]:
        """The node at a glance (owners): version, last backup, sync, database size."""
        body, _ = await self._request("GET", "/status")
        return body

    async def receivables(self, limit: int = 10) -> dict[str, Any]:
        body, _ = await self._request("GET", "/reports/receivables", params={"limit": str(limit)})
        return body

    async def events(self, after: int, limit: int = 100) -> dict[str, Any]:
        """A page of the node's events feed after a cursor."""
        params = {"after": str(after), "limit": str(limit)}
        body, _ = await self._request("GET", "/events", params=params)
        return body

    # Customers on Telegram (node/telegram.py keeps links, codes and sent messages)

    async def create_invite(self, customer_id: str, relink: bool = False) -> dict[str, Any]:
        """A one-time code; NodeError 409 when the customer is linked and not `relink`."""
        path = _customer_path(customer_id, "/telegram/invite")
        body, _ = await self._request("POST", path, json={"relink": relink})
        return body

    async def check_invite(self, code: str) -> dict[str, Any]:
        body, _ = await self._request("POST", "/telegram/invites/check", json={"code": code})
        return body

    async def link_account(self, code: str, user_id: int) -> dict[str, Any]:
        payload = {"code": code, "telegram_user_id": user_id}
        body, _ = await self._request("POST", "/telegram/links", json=payload)
        return body

    async def link_of(self, user_id: int) -> dict[str, Any] | None:
        """The link of a Telegram user, or None when they have none."""
        try:
            body, _ = await self._request("GET", f"/telegram/links/{int(user_id)}")
        except NodeError as err:
            if err.status == 404:
                return None
            raise
        return body

    async def set_receipts(self, user_id: int, on: bool) -> dict[str, Any]:
        path = f"/telegram/links/{int(user_id)}"
        body, _ = await self._request("PATCH", path, json={"receipts": on})
        return body

    async def unlink(self, user_id: int) -> None:
        await self._request("DELETE", f"/telegram/links/{int(user_id)}")

    async def receipts_cursor(self) -> int:
        body, _ = await self._request("GET", "/telegram/receipts/cursor")
        return int(body["cursor"])

    async def set_receipts_cursor(self, cursor: int) -> None:
        await self._request("PUT", "/telegram/receipts/cursor", json={"cursor": cursor})

    async def claim_receipt(self, change_id: str) -> dict[str, Any]:
        body, _ = await self._request("POST", "/telegram/receipts", json={"change_id": change_id})
        return body

    async def claim_reminder(self, customer_id: str, every_days: int) -> dict[str, Any]:
        """Claim a reminder; NodeError 404 (not linked) or 409 (owes nothing, reminded)."""
        payload = {"customer_id": _checked_id(customer_id), "every_days": every_days}
        body, _ = await self._request("POST", "/telegram/reminders", json=payload)
        return body

    async def overdue(self, min_amount: int, after_days: int) -> list[dict[str, Any]]:
        params = {"min_amount": str(min_amount), "after_days": str(after_days)}
        body, _ = await self._request("GET", "/telegram/overdue", params=params)
        return body

    async def release_message(self, message_id: str) -> None:
        """Give back a claimed receipt or reminder that could not be delivered."""
        await self._request("DELETE", f"/telegram/messages/{canonical_id(message_id)}")

    # Writes: each carries an Idempotency-Key so a resend records nothing twice

    async def record_ledger_entry(
        self, customer_id: str, kind: str, amount: int, description: str, key: str
    ) -> dict[str, Any]:
        """Post a payment received (kind "credit") or a manual debit."""
        payload = {"type": kind, "amount": amount, "description": description}
        path = _customer_path(customer_id, "/ledger")
        body, _ = await self._request("POST", path, json=payload, key=key)
        return body

    async def record_account_sale(self, customer_id: str, total: int, key: str) -> dict[str, Any]:
        """A purchase on account: the node writes the ledger debit and awards points."""
        cid = _checked_id(customer_id)
        payload = {"customer_id": cid, "total": total, "payment_method": "account"}
        body, _ = await self._request("POST", "/sales", json=payload, key=key)
        return body

    async def redeem_points(self, customer_id: str, points: int, key: str) -> dict[str, Any]:
        path = _customer_path(customer_id, "/loyalty/redeem")
        body, _ = await self._request("POST", path, json={"points": points}, key=key)
        return body

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> tuple[Any, Any]:
        if self._session is None:
            raise RuntimeError("NodeClient is used outside `async with`")
        headers = {"Idempotency-Key": key} if key else None
        try:
            async with self._session.request(
                method, self._base + path, params=params, json=json, headers=headers
            ) as response:
                body = await _read_json(response)
                if response.status >= 400:
                    raise problem_error(response.status, body)
                return body, response.headers
        except (TimeoutError, aiohttp.ClientConnectionError):
            raise NodeError(
                "I can't reach the shop node right now. Please try again in a moment."
            ) from None
        except aiohttp.ClientError:
            raise NodeError("The shop node sent an answer I don't understand.") from None


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def problem_error(status: int, problem: Any) -> NodeError:
    """Turn a problem+json answer into a sentence for the chat, never a traceback."""
    problem = problem if isinstance(problem, dict) else {}
    detail = sentence(problem.get("detail") or "")
    if status == 401:
        message = "The shop node did not accept the bot's API token for your role."
    elif status == 403:
        message = "The shop node does not allow that for your role."
    elif status == 404:
        message = "That customer no longer exists."
    elif status in (409, 422) and detail:
        message = detail
    elif status == 422:
        errors = problem.get("errors") or []
        parts = [f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        message = sentence("; ".join(parts)) or "The shop node rejected that request."
    elif status == 429:
        message = "The shop node is busy. Please try again in a moment."
    elif status >= 500:
        message = "The shop node had a problem finishing that. Please try again in a moment."
    else:
        message = detail or "The shop node rejected that request."
    return NodeError(message, status, problem)
