"""Every error under /v1 in OpenAI's shape, {"error": {"message", "type", "code", "param"}}.

Clients' own retry logic then works.

Luca's handlers (luca/errors.py, luca/limits.py) still decide the status, the message and the
headers (Retry-After, WWW-Authenticate); one after-request hook rewrites the body. That also
covers errors raised before a /v1 view runs (authentication, rate limits, routing).
"""
from __future__ import annotations

import json
from typing import Any

from flask import Response, request

from luca.errors import APIError
from luca.openai_api import bp
from luca.openai_api.schemas import ErrorObject, ErrorResponse

PREFIX = "/v1"

# Luca's codes that OpenAI's clients know under another name.
CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}


def error_type(status: int, code: str) -> str:
    """OpenAI's error type for a status (and a few codes)."""
    if code == "budget_exceeded":
        return "insufficient_quota"
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def invalid(message: str, param: str | None, code: str = "invalid_request", status: int = 400) -> APIError:
    """A 400 about one parameter of the request, named by param (OpenAI's way: "messages[1].content")."""
    return APIError(status, code, message, details={"param": param})


def in_openai_shape(status: int, error: dict[str, Any]) -> ErrorResponse:
    """Luca's {"code", "message", "details"} as OpenAI's error object."""
    code = str(error.get("code") or "error")
    details = error.get("details")
    param = details.get("param") if isinstance(details, dict) else None
    return ErrorResponse(error=ErrorObject(message=str(error.get("message") or ""), type=error_type(status, code),
                                           code=CODES.get(code, code), param=param))


@bp.after_app_request
def openai_error_shape(response: Response) -> Response:
    """Rewrite a Luca error body under /v1 into OpenAI's shape; everything else passes untouched."""
    if response.status_code < 400 or not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
        return response
    if response.mimetype != "application/json" or response.is_streamed:
        return response
    try:
        error = json.loads(response.get_data()).get("error")
    except (ValueError, AttributeError):
        return response
    if isinstance(error, dict) and "type" not in error:
        response.set_data(in_openai_shape(response.status_code, error).model_dump_json())
    return response
