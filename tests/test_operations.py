"""Operations: health checks, alerts and their webhook, the admin statistics endpoints, breaker resets."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade

from config import TestConfig
from luca import create_app, extensions
from tests.support import ROOT
from tests.support.api import Api, create_user
from tests.support.apps import close_app
from tests.support.services import temporary_postgres_database
from tests.support.webhook import Webhook


def admin_api(app: Flask) -> Api:
    """A signed client of an admin."""
    user_id, token = create_user(app, "root@example.com", admin=True)
    return Api(app.test_client(), token, user_id)


# -- health ------------------------------------------------------------------------------------
def test_healthz_and_readyz_are_ok_when_everything_answers(app) -> None:
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ok" and body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "not configured"


def test_readyz_is_503_with_the_database_down_and_healthz_stays_200() -> None:
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://127.0.0.1:1/luca",
                                  "DATABASE_CONNECT_TIMEOUT": 1.0})
    try:
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["database"]["status"] == "down"
        assert client.get("/healthz").status_code == 200
    finally:
        close_app(app)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_at_first_revision(request, tmp_path: Path) -> Iterator[str]:
    """A database migrated only to revision 0001 (behind the code)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        cm = None
    else:
        cm = temporary_postgres_database("luca_old")
        url = cm.__enter__()
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="0001")
    close_app(app)
    yield url
    if cm is not None:
        cm.__exit__(None, None, None)


def test_readyz_is_503_when_the_schema_is_behind_the_migrations(database_at_first_revision: str) -> None:
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": database_at_first_revision})
    try:
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        database = ready.get_json()["checks"]["database"]
        assert database["status"] == "behind" and database["current"] == ["0001"]
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        close_app(app)


def test_readyz_is_200_degraded_with_redis_down(app_factory) -> None:
    app = app_factory(REDIS_URL="redis://127.0.0.1:1/0")
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "degraded" and body["checks"]["queues"]["status"] == "degraded"
    assert client.get("/healthz").status_code == 200


# -- alerts ------------------------------------------------------------------------------------
@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook receiver."""
    hook = Webhook()
    yield hook
    hook.close()


def alert(app: Flask, name: str) -> dict:
    """Evaluate the alerts and return one of them."""
    with app.app_context():
        return next(a for a in extensions.alerts.evaluate() if a["name"] == name)


def test_an_open_breaker_fires_and_a_reset_resolves_each_posted_once(app_factory, webhook: Webhook) -> None:
    app = app_factory(ALERT_WEBHOOK_URL=webhook.url)
    with app.app_context():
        extensions.breakers.ai("openai").open()
    assert alert(app, "breaker_open")["firing"] is True
    assert alert(app, "breaker_open")["firing"] is True  # still firing: no second post
    with app.app_context():
        extensions.breakers.ai("openai").reset()
    assert alert(app, "breaker_open")["firing"] is False
    alert(app, "breaker_open")
    posts = webhook.wait_for(2)
    time.sleep(0.2)
    assert len(webhook.posts) == 2
    assert "FIRING" in posts[0]["text"] and "AI-openai" in posts[0]["text"]
    assert "RESOLVED" in posts[1]["text"]


def test_the_job_failure_rate_alert_fires_above_five_percent_and_resolves(app_factory, webhook: Webhook) -> None:
    app = app_factory(ALERT_WEBHOOK_URL=webhook.url)
    with app.app_context():
        jobs = extensions.jobs.of(app)
        jobs.record("files", "failed")
    assert alert(app, "job_failure_rate")["firing"] is True
    with app.app_context():
        for _ in range(30):
            jobs.record("titles", "completed")
    resolved = alert(app, "job_failure_rate")
    assert resolved["firing"] is False and resolved["value"] == round(1 / 31, 4)
    assert [("FIRING" in p["text"]) for p in webhook.wait_for(2)] == [True, False]


def test_a_low_cache_hit_rate_fires_and_resolves(app_factory, webhook: Webhook) -> None:
    app = app_factory(ALERT_WEBHOOK_URL=webhook.url, ALERT_MIN_SAMPLES=5)
    with app.app_context():
        cache = extensions.cache.of(app)
        for i in range(5):
            cache.get(f"missing-{i}")
    assert alert(app, "cache_hit_rate_low")["firing"] is True
    with app.app_context():
        cache.set("present", "x")
        for _ in range(20):
            cache.get("present")
    assert alert(app, "cache_hit_rate_low")["firing"] is False
    assert len(webhook.wait_for(2)) == 2


def test_redis_connection_failures_fire_and_resolve(app_factory, own_redis, webhook: Webhook) -> None:
    url, start, kill = own_redis
    app = app_factory(REDIS_URL=url, ALERT_WEBHOOK_URL=webhook.url, REDIS_BREAKER_RESET_TIMEOUT=0.3,
                      REDIS_SOCKET_TIMEOUT=0.2)
    assert alert(app, "redis_connection_failures")["firing"] is False
    kill()
    assert alert(app, "redis_connection_failures")["firing"] is True
    start()
    time.sleep(0.4)
    assert alert(app, "redis_connection_failures")["firing"] is False
    webhook.wait_for(4)  # the redis breaker's opening fires breaker_open too
    mine = [p["alert"]["firing"] for p in webhook.posts if p["alert"]["name"] == "redis_connection_failures"]
    assert mine == [True, False]


def test_a_hanging_webhook_does_not_slow_requests(app_factory) -> None:
    hook = Webhook(delay=30)
    try:
        app = app_factory(ALERT_WEBHOOK_URL=hook.url)
        admin = admin_api(app)
        with app.app_context():
            extensions.breakers.ai("openai").open()
        response = admin.get("/api/admin/alerts")
        assert response.status_code == 200
        deadline = time.monotonic() + 5
        while hook.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The answer came back while the webhook was still holding its request open.
        assert hook.in_flight == 1 and hook.posts == []
        assert admin.get("/api/conversations").status_code == 200
    finally:
        hook.close()


# -- admin endpoints and commands ----------------------------------------------------------------
def test_admin_statistics_endpoints_answer_admins_only(app) -> None:
    admin = admin_api(app)
    user_id, token = create_user(app, "plain@example.com")
    plain = Api(app.test_client(), token, user_id)
    for path in ("/api/admin/cache-stats", "/api/admin/breakers", "/api/admin/alerts", "/api/admin/queue-stats"):
        assert plain.get(path).status_code == 403, path
        assert admin.get(path).status_code == 200, path
    cache = admin.get("/api/admin/cache-stats").get_json()
    assert set(cache) >= {"memory", "redis", "dedup"}
    breakers = admin.get("/api/admin/breakers").get_json()
    assert set(breakers) >= {"database", "externalAPI", "aiProviders"}
    alerts = admin.get("/api/admin/alerts").get_json()
    assert {a["name"] for a in alerts["alerts"]} == {"redis_connection_failures", "job_failure_rate",
                                                      "breaker_open", "cache_hit_rate_low"}


def test_an_admin_can_reset_a_breaker(app) -> None:
    admin = admin_api(app)
    with app.app_context():
        extensions.breakers.database.open()
    result = app.test_cli_runner().invoke(args=["breakers", "reset", "database"])
    assert result.exit_code == 0 and "closed" in result.output
    with app.app_context():
        extensions.breakers.external.open()
    body = admin.post("/api/admin/breakers/external-api/reset").get_json()
    assert body["state"] == "closed"
    assert admin.post("/api/admin/breakers/nonsense/reset").status_code == 404


def test_breaker_reset_command_refuses_unknown_names(runner) -> None:
    result = runner.invoke(args=["breakers", "reset", "nonsense"])
    assert result.exit_code != 0 and "no breaker" in result.output
