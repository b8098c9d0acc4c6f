"""Fixtures: an app on SQLite and on PostgreSQL, a client, a CLI runner, users with tokens, Redis, fake providers.

Every test that uses the database runs twice, on SQLite and on PostgreSQL, each of them a
database of this run's own. A module or test marked ``sqlite_only`` runs once, on SQLite: what
it checks (headers, pages, logs, rate limits ...) does not depend on the database. The helpers
these fixtures are built from live in tests/support/.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from config import TestConfig
from luca import create_app
from tests.support import ROOT
from tests.support.api import Api, create_user
from tests.support.apps import clean_database, close_app, migrate, provider_env, provider_overrides
from tests.support.jobs import Stack
from tests.support.processes import RedisServer, luca_env
from tests.support.provider import FakeProvider
from tests.support.services import REDIS_URL, RedisTarget, service_missing, temporary_postgres_database

# The browser tests' shared fixtures (browser, browsing, screenshots); each browser module defines its site.
pytest_plugins = ["tests.support.browser"]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give a test marked sqlite_only the SQLite database alone (a test's own parametrize wins)."""
    if "database_url" not in metafunc.fixturenames or not metafunc.definition.get_closest_marker("sqlite_only"):
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs["argnames"]
        if "database_url" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    metafunc.definition.add_marker(pytest.mark.parametrize("database_url", ["sqlite"], indirect=True), append=False)


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
    """Every database test runs once on SQLite and once on PostgreSQL (sqlite_only: on SQLite alone)."""
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
    target.delete(f"{target.prefix}*")
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


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], Any], Callable[[], None]]]:
    """A redis-server of this test's own on a spare port: its URL, and start and kill, which the test may call."""
    server = RedisServer(tmp_path / "redis.log").start()
    yield server.url, server.start, server.kill
    server.stop()


@pytest.fixture(scope="session")
def provider_servers() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    """Two fake providers, "primary" and "backup", for the whole run."""
    with FakeProvider(name="primary") as primary, FakeProvider(name="backup") as backup:
        yield primary, backup


@pytest.fixture
def servers(provider_servers: tuple[FakeProvider, FakeProvider]) -> Iterator[tuple[FakeProvider, FakeProvider]]:
    """The two fake providers, reset to healthy defaults before and after the test."""
    for server in provider_servers:
        server.reset()
    yield provider_servers
    for server in provider_servers:
        server.reset()


@pytest.fixture
def stack(app_factory: Callable[..., Flask], database_url: str, redis_target: RedisTarget, servers: Any,
          tmp_path: Path) -> Iterator[Stack]:
    """RQ mode: queues of this test's own (QUEUE_PREFIX), real Redis, the primary fake provider, real workers."""
    primary, _ = servers
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    settings = provider_overrides(primary, QUEUE_PREFIX=prefix, JOBS_RETRY_BACKOFF=0, JOBS_RECONCILE_GRACE=0,
                                  **redis_target.overrides())
    app = app_factory(**settings)
    env = luca_env(DATABASE_URL=database_url, REDIS_URL=redis_target.url, REDIS_KEY_PREFIX=redis_target.prefix,
                   QUEUE_PREFIX=prefix, JOBS_RETRY_BACKOFF="0", **provider_env(primary))
    yield Stack(app, settings, env, prefix, redis_target, tmp_path)
    redis_target.delete_queues(prefix)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        with temporary_postgres_database("luca_migrations") as url:
            yield url
