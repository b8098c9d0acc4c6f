"""Apps under test and their database: migrate, release, clean up, count statements, point at fake providers."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask

from config import TestConfig
from luca import create_app
from luca.extensions import db, shutdown
from luca.models import Conversation
from tests.support import ROOT

TABLES = ["document_chunks", "files", "messages", "conversations", "api_tokens", "user_sessions", "password_resets", "invitations",
          "memberships", "users", "organisations", "analytics_daily", "analytics_rollups", "job_outbox", "budgets", "usage_records"]


def migrate(url: str) -> None:
    """Run every migration against url, the way `flask db upgrade` does."""
    from flask_migrate import upgrade

    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


def close_app(app: Flask) -> None:
    """Release what an app holds open: job threads, database connections, Redis clients, provider clients."""
    shutdown(app)


def clean_database(url: str) -> None:
    """Delete every row the test wrote."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()


@contextmanager
def engine_listener(app: Flask, event: str, listener: Any) -> Iterator[None]:
    """Listen to one of the app's engine events inside the block."""
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, event, listener)
    try:
        yield
    finally:
        sa.event.remove(engine, event, listener)


@contextmanager
def count_statements(app: Flask) -> Iterator[list[str]]:
    """Collect the SQL statements the app's engine runs inside the block, in this thread.

    The test client serves a request in the calling thread; background jobs run on
    other threads and are not the request's statements.
    """
    statements: list[str] = []
    me = threading.get_ident()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me:
            statements.append(statement)

    with engine_listener(app, "before_cursor_execute", record):
        yield statements


def conversation_row(app: Flask, conversation_id: str) -> Conversation:
    """The conversation as stored."""
    with app.app_context():
        row = db.session.get(Conversation, uuid.UUID(conversation_id))
        db.session.expunge(row)
        return row


def provider_overrides(*servers: Any, **extra: Any) -> dict[str, Any]:
    """App settings that make the given fake providers the provider chain, in order."""
    return {
        "AI_PROVIDERS": [s.name for s in servers],
        "AI_PROVIDER_SETTINGS": {s.name: {"base_url": s.url, "api_key": "test-key", "model": f"{s.name}-model"}
                                 for s in servers},
        "AI_TIMEOUT": 5.0,
        "AI_CONNECT_TIMEOUT": 1.0,
        **extra,
    }


def provider_env(*servers: Any) -> dict[str, str]:
    """The same chain as environment variables, for Luca processes: AI_PROVIDERS and each one's URL, model, key."""
    env = {"AI_PROVIDERS": ",".join(s.name for s in servers)}
    for server in servers:
        prefix = server.name.upper()
        env.update({f"{prefix}_BASE_URL": server.url, f"{prefix}_MODEL": f"{server.name}-model",
                    f"{prefix}_API_KEY": "test-key"})
    return env


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve app over real HTTP (werkzeug, a thread per request) on a free port for the block; yield its base URL.

    For clients that need a URL, such as the openai SDK, while the test keeps the app's fixtures.
    """
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
