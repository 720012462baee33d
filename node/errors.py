"""Domain errors as typed values, saying what went wrong in the shop's terms only.

Which HTTP status and problem+json each one becomes is the API's business
(node.api.problems); the command line prints their detail.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the shop cannot carry out; `detail` says why, `extra` adds facts to act on."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """No customer, sale, entry or token with that id or name."""


class Conflict(DomainError):
    """The shop's state refuses it: over the credit limit, too few points, already done."""


class NotSaved(DomainError):
    """A write that ran but could not be committed (disk full, I/O error, the database
    held by another program): nothing of it was recorded, so it is safe to send again."""


class Forbidden(DomainError):
    """The caller's role may not do it."""


class Invalid(DomainError):
    """Values the shop cannot take; `errors` lists every field that is wrong, with why."""

    def __init__(self, errors: list[tuple[str, str]], detail: str | None = None) -> None:
        self.errors = errors
        summary = detail or "; ".join(f"{field}: {message}" for field, message in errors)
        super().__init__(summary)


def invalid(field: str, message: str) -> Invalid:
    return Invalid([(field, message)])


class Unprocessable(Invalid):
    """Well-formed values the shop cannot apply as they stand (a refund above what is left,
    an idempotency key reused for another request); `errors` names the field, if one is."""

    def __init__(self, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(errors or [], detail)
