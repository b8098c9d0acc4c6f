"""Fixtures: an app on SQLite and on PostgreSQL, a client, a CLI runner, users with tokens.

PostgreSQL tests use a database of their own, created for the run and dropped after it.
They skip when PostgreSQL is not answering, unless LUCA_REQUIRE_SERVICES=1 (set by CI),
which turns a missing service into a failure.
"""
from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from config import TestConfig
from luca import create_app
from luca.extensions import db, shutdown
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("LUCA_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_URL = os.environ.get("LUCA_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("LUCA_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}
TABLES = ["files", "messages", "conversations", "api_tokens", "users", "analytics_daily", "analytics_rollups",
          "job_outbox"]


def service_missing(reason: str) -> None:
    """Skip a test whose service is down, or fail it when CI says services are mandatory."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (LUCA_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def temporary_postgres_database(prefix: str = "luca_test") -> Iterator[str]:
    """Create an empty PostgreSQL database for this run and drop it afterwards."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(f"PostgreSQL is not answering at {sa.make_url(POSTGRES_URL).render_as_string()}: "
                        f"{type(exc.orig).__name__}")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(url: str) -> None:
    """Run every migration against url, the way `flask db upgrade` does."""
    from flask_migrate import upgrade

    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file shared by the run's SQLite tests."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'luca.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this run's own."""
    with temporary_postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every database test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def app_factory(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database (several when a test needs two instances); clean up after."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": database_url,
                                      "MIGRATIONS_DIR": str(ROOT / "migrations"), **overrides})
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)
    clean_database(database_url)


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


@dataclass
class RedisTarget:
    """The test's Redis: a URL, a key prefix of its own, and a client to inspect it."""

    url: str
    prefix: str
    client: Any

    def overrides(self) -> dict[str, Any]:
        """App settings that point Luca at this Redis and prefix."""
        return {"REDIS_URL": self.url, "REDIS_KEY_PREFIX": self.prefix}


@pytest.fixture
def redis_target() -> Iterator[RedisTarget]:
    """Real Redis (its own DB number); every key under this test's prefix is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        service_missing(f"Redis is not answering at {REDIS_URL}: {type(exc).__name__}")
    target = RedisTarget(REDIS_URL, f"luca-test-{uuid.uuid4().hex[:10]}:", client)
    yield target
    keys = list(client.scan_iter(match=f"{target.prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def rq_queue(redis_target: RedisTarget) -> Iterator[Any]:
    """A uniquely named RQ queue on the test Redis holding one job; deleted afterwards."""
    import redis
    from rq import Queue

    connection = redis.Redis.from_url(redis_target.url)
    queue = Queue(f"test-{uuid.uuid4().hex[:8]}", connection=connection)
    try:
        queue.enqueue("builtins.len", "abc")
        yield queue
    finally:
        queue.delete(delete_jobs=True)
        connection.close()


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header with HTTP Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    """The app under test."""
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the app's CLI commands."""
    return app.test_cli_runner()


@dataclass
class Api:
    """A test client that signs every request with one user's token."""

    client: FlaskClient
    token: str
    user_id: int

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The Authorization header plus any extra ones."""
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET with the token."""
        return self.client.get(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST JSON with the token."""
        return self.client.post(path, json=json, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """PATCH JSON with the token."""
        return self.client.patch(path, json=json, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE with the token."""
        return self.client.delete(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def new_conversation(self, **body: Any) -> dict[str, Any]:
        """Create a conversation and return its JSON.

        It gets a title unless the test passes title=None, so that no background title
        job talks to the test's providers behind its back.
        """
        body.setdefault("title", "Test conversation")
        response = self.post("/api/conversations", json={k: v for k, v in body.items() if v is not None})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def ask(self, conversation_id: str, content: str, **body: Any) -> Any:
        """Send a message to a conversation."""
        return self.post(f"/api/conversations/{conversation_id}/messages", json={"content": content, **body})


def create_user(app: Flask, email: str, admin: bool = False) -> tuple[int, str]:
    """Create a user through the CLI, as an operator would; return its id and token."""
    args = ["users", "create", email] + (["--admin"] if admin else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        user_id = db.session.execute(sa.text("SELECT id FROM users WHERE email = :e"), {"e": email}).scalar_one()
    return user_id, token


@pytest.fixture
def make_api(app: Flask, client: FlaskClient) -> Callable[..., Api]:
    """Create users on demand, each with its own signed client."""

    def make(email: str | None = None, admin: bool = False) -> Api:
        user_id, token = create_user(app, email or f"user-{uuid.uuid4().hex[:8]}@example.com", admin)
        return Api(client, token, user_id)

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """A signed client for one ordinary user."""
    return make_api("alice@example.com")


@pytest.fixture
def other_api(make_api: Callable[..., Api]) -> Api:
    """A signed client for a second user."""
    return make_api("bob@example.com")


@pytest.fixture
def own_redis() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test's own on a spare port, which the test may kill and restart."""
    port = free_port()
    processes: list[subprocess.Popen] = []

    def start() -> None:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill() -> None:
        processes[-1].kill()
        processes[-1].wait()

    start()
    yield f"redis://127.0.0.1:{port}/0", start, kill
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def provider_servers() -> Iterator[tuple[Any, Any]]:
    """Two local OpenAI-compatible servers, "primary" and "backup", for the whole run."""
    from luca.ai.testserver import TestServer

    with TestServer(name="primary") as primary, TestServer(name="backup") as backup:
        yield primary, backup


@pytest.fixture
def servers(provider_servers: tuple[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """The two provider servers, reset to healthy defaults before and after the test."""
    for server in provider_servers:
        server.reset()
    yield provider_servers
    for server in provider_servers:
        server.reset()


def provider_overrides(*servers: Any, **extra: Any) -> dict[str, Any]:
    """App settings that make the given test servers the provider chain, in order."""
    return {
        "AI_PROVIDERS": [s.name for s in servers],
        "AI_PROVIDER_SETTINGS": {s.name: {"base_url": s.url, "api_key": "test-key", "model": f"{s.name}-model"}
                                 for s in servers},
        "AI_TIMEOUT": 5.0,
        "AI_CONNECT_TIMEOUT": 1.0,
        **extra,
    }


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

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
