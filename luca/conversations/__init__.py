"""The conversations blueprint: the user-facing REST API under /api."""
from flask import Blueprint

from luca.api import API_ERRORS, endpoints
from luca.auth import require_user

bp = Blueprint("conversations", __name__)
bp.before_request(require_user)
endpoint = endpoints(errors=API_ERRORS)  # every endpoint here needs a token, and the database

from luca.conversations import files, routes  # noqa: E402,F401  (routes attach themselves to bp)
