"""rq-dashboard at /admin/rq, for admins only, behind HTTP Basic auth (admin email + one of their API tokens).

rq-dashboard's blueprint is a module-level singleton shared by every app in the process (each
app may register it once), and Flask forbids adding hooks to a blueprint once it has been
registered. So nothing is added to the blueprint: each app gets one app-level before_request
that acts only on dashboard requests.
"""
from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Flask, current_app, request
from rq_dashboard.web import blueprint, setup_rq_connection

from luca.auth import CurrentUser, lookup_token
from luca.errors import APIError, not_found
from luca.limits import refuse_credentials
from luca.redis import connection_options
from luca.models import utcnow

log = logging.getLogger(__name__)

BLUEPRINT = "rq_dashboard"
URL_PREFIX = "/admin/rq"
REALM = 'Basic realm="Luca operators", charset="UTF-8"'
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# rq-dashboard also requeues every failed job of a queue on a plain GET.
WRITING_ENDPOINTS = frozenset({f"{BLUEPRINT}.requeue_all"})


def register_dashboard(app: Flask) -> None:
    """Mount rq-dashboard at /admin/rq on the app's REDIS_URL, guarded by admin Basic auth."""
    url = app.config.get("REDIS_URL")
    if url:
        app.config.setdefault("RQ_DASHBOARD_REDIS_URL", [dashboard_redis_url(url, app)])
    if app.config.get("RQ_DASHBOARD_REDIS_URL"):
        # Set RQ_DASHBOARD_REDIS_URL first: otherwise its legacy-config shim warns about Luca's REDIS_URL.
        setup_rq_connection(app)
    else:
        log.info("rq-dashboard at %s answers 503: REDIS_URL is not set", URL_PREFIX)
    app.before_request(guard_dashboard)
    app.register_blueprint(blueprint, url_prefix=URL_PREFIX)


def dashboard_redis_url(url: str, app: Flask) -> str:
    """REDIS_URL plus the options of Luca's own clients (timeouts, Heroku's self-signed TLS) as URL query options."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    for name, value in connection_options(url, app.config).items():
        options.setdefault(name, str(value))
    return urlunsplit(parts._replace(query=urlencode(options)))


def is_dashboard_request() -> bool:
    """Whether this request is for the dashboard (including unknown paths under its prefix)."""
    return request.blueprint == BLUEPRINT or request.path == URL_PREFIX or request.path.startswith(URL_PREFIX + "/")


def guard_dashboard() -> None:
    """App-level before_request: dashboard requests need an admin, a same-site origin for writes, and Redis."""
    if not is_dashboard_request():
        return
    user = basic_auth_user()
    if not user.is_admin or "admin" not in user.scopes:
        raise APIError(403, "forbidden", "the queue dashboard is for administrators")
    if is_cross_site_write():
        raise APIError(403, "forbidden", "the queue dashboard refuses changes requested by another site")
    urls = current_app.config.get("RQ_DASHBOARD_REDIS_URL")
    if not urls:
        raise APIError(503, "queues_unavailable", "rq-dashboard needs REDIS_URL; this server has no Redis configured")
    # rq-dashboard raises LookupError (a 500) for an instance number past its list of Redis URLs.
    if (request.view_args or {}).get("instance_number", 0) >= len(urls):
        raise not_found("Redis instance")


def basic_auth_user() -> CurrentUser:
    """The user whose email and live API token came as HTTP Basic credentials; 401 with a challenge otherwise."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username or not auth.password:
        raise challenge("sign in with an admin's email as user name and one of their API tokens as password")
    user = lookup_token(auth.password)
    expired = user is not None and user.expires_at is not None and user.expires_at <= utcnow()
    if user is None or expired or user.email.lower() != auth.username.strip().lower():
        log.info("dashboard sign-in refused from %s", request.remote_addr)
        refuse_credentials(challenge("the email or API token is wrong, or the token was revoked"))
    return user


def challenge(message: str) -> APIError:
    """A 401 that makes browsers show their sign-in prompt."""
    return APIError(401, "unauthorized", message, headers={"WWW-Authenticate": REALM})


def is_cross_site_write() -> bool:
    """Whether a browser sent a state-changing request from another site (browsers resend Basic credentials)."""
    if request.method in SAFE_METHODS and request.endpoint not in WRITING_ENDPOINTS:
        return False
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in {"same-origin", "none"}:
        return True
    origin = request.headers.get("Origin")
    # Hosts only: without TRUSTED_PROXY_HOPS the scheme seen here is http even when the browser used https.
    return origin is not None and urlsplit(origin).netloc != request.host
