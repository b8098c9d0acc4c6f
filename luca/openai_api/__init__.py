"""The OpenAI-compatible door (/v1): chat completions and models for any OpenAI client, over Luca's answer machinery.

Named openai_api, not openai, so that it is never mistaken for the SDK. Requests carry an API
token as the bearer key; every error leaves in OpenAI's shape (see errors.py).
"""
from flask import Blueprint

from luca.auth import require_user

bp = Blueprint("openai_api", __name__)
bp.before_request(require_user)

from luca.openai_api import errors, routes  # noqa: E402,F401  (they attach themselves to bp)
