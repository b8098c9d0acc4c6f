"""Luca: the backend of an AI accounting assistant. create_app() builds it."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config
from luca.breakers import guard_database
from luca.extensions import SERVICES, breakers, db, migrate, openapi, redis_gateway
from luca.headers import register_security_headers
from luca.logs import configure_logging

log = logging.getLogger(__name__)


class SignedCookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session (single sign-on keeps its state there until the callback), opened only
    when its cookie came: API calls never send it, and Flask builds the cookie's signer on every request."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """An empty session when the request has no session cookie, else Flask's own."""
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def create_app(config_class: type[Config] = Config, overrides: dict[str, Any] | None = None) -> Flask:
    """Build the Flask application from a config class (plus optional overrides for tests)."""
    app = Flask(__name__, instance_relative_config=False)
    app.session_interface = SignedCookieSessions()
    app.config.from_object(config_class)
    app.config.update(overrides or {})
    configure_logging(app)
    register_proxy_fix(app)
    register_extensions(app)
    register_database(app)
    register_blueprints(app)
    openapi.init_app(app)  # reads the URL map, so after the blueprints
    register_security_headers(app)
    register_error_handling(app)
    register_commands(app)
    return app


def register_proxy_fix(app: Flask) -> None:
    """Believe X-Forwarded-For, -Proto and -Host from exactly TRUSTED_PROXY_HOPS proxies (werkzeug's ProxyFix).

    With 0 (the default) they are ignored: the client is the socket's peer. Each proxy appends
    to X-Forwarded-For, so only the last TRUSTED_PROXY_HOPS entries are not the client's own words.
    """
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops < 0:
        raise ValueError(f"TRUSTED_PROXY_HOPS must be 0 or more, not {hops}")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def register_extensions(app: Flask) -> None:
    """Build every service of the app now, so its first request costs what the hundredth does.

    In order, each on the ones before it: breakers, the Redis gateway, cache, jobs, answer
    slots, rate limits, alerts, AI providers, deduplication, the budget ledger.
    """
    for extension in SERVICES:
        extension.init_app(app)


def engine_options(app: Flask) -> dict[str, Any]:
    """Connection settings per database: timeouts on PostgreSQL, a busy timeout on SQLite."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql"):
        return {
            "pool_size": app.config["DATABASE_POOL_SIZE"],
            "max_overflow": app.config["DATABASE_POOL_SIZE"],
            "pool_timeout": app.config["DATABASE_CONNECT_TIMEOUT"],
            "connect_args": {
                "connect_timeout": max(1, round(app.config["DATABASE_CONNECT_TIMEOUT"])),
                "options": f"-c statement_timeout={app.config['DATABASE_STATEMENT_TIMEOUT_MS']}",
            },
        }
    return {"connect_args": {"timeout": 15}}


def register_database(app: Flask) -> None:
    """Bind Flask-SQLAlchemy and Flask-Migrate to the app."""
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app))
    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.config.get("MIGRATIONS_DIR", "migrations")),
                     compare_type=True, render_as_batch=True)
    with app.app_context():
        guard_database(db.engine, breakers.of(app).database)
        if db.engine.dialect.name == "postgresql":
            ping_idle_connections(db.engine, app.config["DATABASE_PING_AFTER"])

    @app.teardown_appcontext
    def end_session(_exc: BaseException | None) -> None:
        """End the request's session even when the database dropped its connection meanwhile.

        Runs before Flask-SQLAlchemy's own teardown (teardowns run last-registered first),
        whose ROLLBACK on a dead connection would escape the app as a bare 500.
        """
        try:
            db.session.remove()
        except SQLAlchemyError as exc:
            log.warning("[Database] a session could not end cleanly: %s", type(exc).__name__)
            db.session.registry.clear()


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    pool_pre_ping would spend a round trip on every checkout (13 % of a worker's CPU under
    load, measured in bench); a connection used a moment ago is alive, and one that died in
    between fails its request, which invalidates the pool so the next request reconnects.
    """

    @event.listens_for(engine, "checkin")
    def note_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in_at", time.monotonic()) < idle_seconds:
            return
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:  # noqa: BLE001 - any failure: drop it and let the pool connect again
            raise DisconnectionError(f"stale pooled connection: {type(exc).__name__}") from exc


@event.listens_for(Engine, "connect")
def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Turn on foreign keys (for cascades) and WAL (readers never wait for the writer) on SQLite."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def register_blueprints(app: Flask) -> None:
    """Mount the API (/api, /api/auth, /api/tokens, /api/org, /api/admin), the OpenAI-compatible API (/v1), rq-dashboard (/admin/rq), docs, health, metrics, the web pages and SSO."""
    from luca.accounts import bp as accounts_bp
    from luca.admin import bp as admin_bp
    from luca.admin.dashboard import register_dashboard
    from luca.api import register_docs
    from luca.conversations import bp as conversations_bp
    from luca.health import register_health
    from luca.metrics import register_metrics
    from luca.openai_api import bp as openai_bp
    from luca.usage import bp as usage_bp
    from luca.web import register_web

    app.register_blueprint(conversations_bp, url_prefix="/api")
    app.register_blueprint(accounts_bp, url_prefix="/api")
    app.register_blueprint(admin_bp, url_prefix="/api/admin")
    app.register_blueprint(openai_bp, url_prefix="/v1")  # the OpenAI-compatible door
    app.register_blueprint(usage_bp, url_prefix="/api")
    register_dashboard(app)
    register_docs(app)
    register_health(app)
    register_metrics(app)
    register_web(app)
    if app.config.get("OIDC_ISSUER"):
        from luca.sso import register_sso

        register_sso(app)


def register_error_handling(app: Flask) -> None:
    """Every error becomes the JSON error shape."""
    from luca.errors import register_error_handlers

    register_error_handlers(app)


def register_commands(app: Flask) -> None:
    """Add the users and tokens commands to the flask CLI."""
    from luca.cli import register_cli

    register_cli(app)


def warm_up(app: Flask) -> None:
    """Open and build what a worker's first request would (gunicorn's post_fork): a database connection
    (GET /readyz, through Flask's whole request path), the send's history SELECT planned on it (on a
    nil id, so nothing is read), and a connection of every Redis client with its scripts loaded.
    Failures are left to the requests."""
    from luca.conversations import service

    with app.test_client() as client:
        client.get("/readyz")
    with app.app_context():
        try:
            service.warm_up()
        except Exception:  # noqa: BLE001 - a database that fails (or its open breaker) never stops a worker
            log.debug("[Warm-up] the history SELECT failed", exc_info=True)
        finally:
            db.session.remove()
    redis_gateway.of(app).warm_up()
