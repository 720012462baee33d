"""Domain errors as typed values; the API turns them into problem+json, the bot into sentences."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class TooSlow(DomainError):
    """The client took too long to send its request."""

    status = 408
    title = "Request timeout"


class Unprocessable(DomainError):
    status = 422
    title = "Unprocessable request"


class Invalid(DomainError):
    """Validation failed; `errors` lists every field that is wrong."""

    status = 422
    title = "Validation failed"

    def __init__(self, errors: list[tuple[str, str]], detail: str | None = None) -> None:
        self.errors = errors
        summary = detail or "; ".join(f"{field}: {message}" for field, message in errors)
        super().__init__(summary)


def invalid(field: str, message: str) -> Invalid:
    return Invalid([(field, message)])


class Malformed(Invalid):
    """The request could not be read at all (not JSON, not a UUID): 400."""

    status = 400
    title = "Malformed request"
