"""The admin blueprint: operator endpoints under /api/admin, for admins only."""
from flask import Blueprint

from luca.api import API_ERRORS, endpoints
from luca.auth import require_admin

bp = Blueprint("admin", __name__)
bp.before_request(require_admin)
endpoint = endpoints(errors=(*API_ERRORS, 403))  # every endpoint here needs an admin's token, and the database

from luca.admin import routes  # noqa: E402,F401  (routes attach themselves to bp)
