"""The conversations blueprint: the user-facing REST API under /api."""
from flask import Blueprint

from luca.auth import require_user

bp = Blueprint("conversations", __name__)
bp.before_request(require_user)

from luca.conversations import files, routes  # noqa: E402,F401  (routes attach themselves to bp)
