"""The accounts blueprint: sign-in, sessions, API tokens and organisations under /api (auth, tokens, org)."""
from flask import Blueprint, current_app, request

from luca.api import API_ERRORS, endpoints
from luca.auth import authenticate

bp = Blueprint("accounts", __name__)
endpoint = endpoints(errors=API_ERRORS)


@bp.before_request
def require_user_unless_public() -> None:
    """Every endpoint needs a signed-in user, except those declared public (sign-up, sign-in, reset, invitations)."""
    spec = getattr(current_app.view_functions.get(request.endpoint or ""), "api_spec", None)
    if spec is None or not spec.public:
        authenticate()


from luca.accounts import org, routes, tokens  # noqa: E402,F401  (routes attach themselves to bp)
