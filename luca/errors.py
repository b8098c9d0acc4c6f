"""One JSON error shape for every failure: {"error": {"code", "message"}}."""
from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from pybreaker import CircuitBreakerError
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error meant for the client: a status, a stable code and a readable message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class DomainError(Exception):
    """An error of a layer below the web (services, pagination, documents); the web layer answers it as HTTP."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    """An unknown id, or one that belongs to someone else (a 404)."""

    def __init__(self, what: str = "resource") -> None:
        super().__init__(f"{what} not found")


class InvalidCursor(DomainError):
    """A cursor this API did not write (a 400)."""

    def __init__(self) -> None:
        super().__init__("the cursor is not valid; start again without one")


class InvalidInput(DomainError):
    """A value the client sent that a lower layer refuses, with a stable code (a 400)."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.code = code


class ReadOnly(DomainError):
    """A write to something the user may only read, e.g. a colleague's shared conversation (a 403)."""


def as_api_error(exc: DomainError) -> APIError:
    """The HTTP answer to a domain error: its status and code in the one JSON error shape."""
    if isinstance(exc, NotFound):
        return APIError(404, "not_found", exc.message)
    if isinstance(exc, InvalidCursor):
        return APIError(400, "invalid_cursor", exc.message)
    if isinstance(exc, InvalidInput):
        return APIError(400, exc.code, exc.message, exc.details)
    if isinstance(exc, ReadOnly):
        return APIError(403, "read_only", exc.message)
    return APIError(400, "bad_request", exc.message, exc.details)


def not_found(what: str = "resource") -> APIError:
    """The error for an unknown id, or an id that belongs to someone else."""
    return APIError(404, "not_found", f"{what} not found")


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> ResponseReturnValue:
    """Build the JSON error response."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def rollback_quietly() -> None:
    """Roll the request's session back; a connection the database already dropped is just discarded."""
    from luca.extensions import db

    try:
        db.session.rollback()
    except SQLAlchemyError:
        db.session.registry.clear()


def is_database_unavailable(exc: BaseException) -> bool:
    """Tell a database that cannot be reached (or timed out) from a bug in a query."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def register_error_handlers(app: Flask) -> None:
    """Turn every exception into the JSON error shape with the right status."""

    @app.errorhandler(APIError)
    def handle_api_error(exc: APIError) -> ResponseReturnValue:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(DomainError)
    def handle_domain_error(exc: DomainError) -> ResponseReturnValue:
        error = as_api_error(exc)
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> ResponseReturnValue:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {}
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return error_response(exc.code or 500, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(CircuitBreakerError)
    def handle_open_breaker(exc: CircuitBreakerError) -> ResponseReturnValue:
        """An open breaker: the database's is database_unavailable; any other's names that breaker."""
        rollback_quietly()
        name = getattr(exc, "breaker", None)
        headers = {"Retry-After": str(max(1, math.ceil(getattr(exc, "retry_after", 0))))}
        if name == "database":
            return error_response(503, "database_unavailable", "the database is not answering; try again shortly",
                                  headers=headers)
        log.warning("open breaker reached the error handler: %s", name or type(exc).__name__)
        return error_response(503, "service_unavailable",
                              f"a service Luca needs is not answering (breaker {name or 'unknown'} is open); "
                              "try again shortly", headers=headers)

    @app.errorhandler(SQLAlchemyError)
    def handle_database_error(exc: SQLAlchemyError) -> ResponseReturnValue:
        rollback_quietly()
        if is_database_unavailable(exc):
            log.warning("database unavailable: %s", type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__)
            return error_response(503, "database_unavailable", "the database is not answering; try again shortly",
                                  headers={"Retry-After": "5"})
        log.exception("database error")
        return error_response(500, "internal_error", "an unexpected error occurred")

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
