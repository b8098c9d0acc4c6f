"""The admin blueprint: operator endpoints under /api/admin, for admins only."""
from flask import Blueprint

from luca.auth import require_admin

bp = Blueprint("admin", __name__)
bp.before_request(require_admin)

from luca.admin import routes  # noqa: E402,F401  (routes attach themselves to bp)
