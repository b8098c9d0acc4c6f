"""rq-dashboard at /admin/rq: HTTP Basic auth with an admin's email and API token, on the app's Redis."""
from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest
import redis
from flask import Flask
from rq import Queue

from luca.admin.dashboard import dashboard_redis_url, guard_dashboard
from tests.support.api import basic, create_user
from tests.support.services import RedisTarget

# Runs once, on SQLite: rq-dashboard and its guard read Redis; the database only finds the token.
pytestmark = pytest.mark.sqlite_only

ADMIN = "ops@example.com"
REALM = 'Basic realm="Luca operators", charset="UTF-8"'


def with_dashboard(app: Flask) -> Flask:
    """The app, with rq-dashboard mounted (create_app mounts it on every app)."""
    assert "rq_dashboard" in app.blueprints
    return app


@pytest.fixture
def dash_app(app_factory: Callable[..., Flask], redis_target: RedisTarget) -> Flask:
    """An app on the test Redis with the dashboard mounted."""
    return with_dashboard(app_factory(**redis_target.overrides()))


@pytest.fixture
def admin_token(dash_app: Flask) -> str:
    """An API token of an admin."""
    return create_user(dash_app, ADMIN, admin=True)[1]


def test_no_credentials_is_401_with_basic_challenge(dash_app: Flask) -> None:
    response = dash_app.test_client().get("/admin/rq/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_wrong_token_is_401(dash_app: Flask, admin_token: str) -> None:
    response = dash_app.test_client().get("/admin/rq/", headers=basic(ADMIN, f"luca_{uuid4().hex}"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM


def test_valid_token_under_another_email_is_401(dash_app: Flask, admin_token: str) -> None:
    create_user(dash_app, "other-admin@example.com", admin=True)
    response = dash_app.test_client().get("/admin/rq/", headers=basic("other-admin@example.com", admin_token))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_bearer_token_is_not_enough(dash_app: Flask, admin_token: str) -> None:
    response = dash_app.test_client().get("/admin/rq/", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 401


def test_non_admin_is_403(dash_app: Flask) -> None:
    _, token = create_user(dash_app, "user@example.com")
    response = dash_app.test_client().get("/admin/rq/", headers=basic("user@example.com", token))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_admin_sees_the_dashboard_page_and_static_files(dash_app: Flask, admin_token: str) -> None:
    client = dash_app.test_client()
    page = client.get("/admin/rq/", headers=basic(ADMIN.upper(), admin_token))
    assert page.status_code == 200
    assert page.mimetype == "text/html" and "RQ dashboard" in page.get_data(as_text=True)
    css = client.get("/admin/rq/static/css/main.css", headers=basic(ADMIN, admin_token))
    assert css.status_code == 200
    css.close()


def test_admin_queues_json_lists_an_enqueued_queue(dash_app: Flask, admin_token: str, rq_queue: Queue) -> None:
    response = dash_app.test_client().get("/admin/rq/0/data/queues.json", headers=basic(ADMIN, admin_token))
    assert response.status_code == 200
    counts = {q["name"]: q["count"] for q in response.get_json()["queues"]}
    assert counts[rq_queue.name] == 1


def test_unknown_redis_instance_is_404(dash_app: Flask, admin_token: str) -> None:
    response = dash_app.test_client().get("/admin/rq/5/data/queues.json", headers=basic(ADMIN, admin_token))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_cross_site_write_is_403_and_changes_nothing(dash_app: Flask, admin_token: str, rq_queue: Queue) -> None:
    headers = {**basic(ADMIN, admin_token), "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = dash_app.test_client().post(f"/admin/rq/queue/{rq_queue.name}/queued/empty", headers=headers)
    assert response.status_code == 403
    assert rq_queue.count == 1


def test_same_origin_write_works(dash_app: Flask, admin_token: str, rq_queue: Queue) -> None:
    headers = {**basic(ADMIN, admin_token), "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    response = dash_app.test_client().post(f"/admin/rq/queue/{rq_queue.name}/queued/empty", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert rq_queue.count == 0


def test_revoked_token_is_401(dash_app: Flask, admin_token: str) -> None:
    client = dash_app.test_client()
    assert client.get("/admin/rq/", headers=basic(ADMIN, admin_token)).status_code == 200
    result = dash_app.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=admin_token)
    assert result.exit_code == 0, result.output
    assert client.get("/admin/rq/", headers=basic(ADMIN, admin_token)).status_code == 401


def test_without_redis_url_an_admin_gets_503(app_factory: Callable[..., Flask]) -> None:
    app = with_dashboard(app_factory())
    _, token = create_user(app, ADMIN, admin=True)
    response = app.test_client().get("/admin/rq/", headers=basic(ADMIN, token))
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "queues_unavailable" and "REDIS_URL" in error["message"]


def test_several_apps_each_get_one_guard(app_factory: Callable[..., Flask], redis_target: RedisTarget) -> None:
    apps = [with_dashboard(app_factory(**redis_target.overrides())) for _ in range(2)]
    _, token = create_user(apps[0], ADMIN, admin=True)  # the apps share one database
    for app in apps:
        assert app.before_request_funcs[None].count(guard_dashboard) == 1
        assert len(app.before_request_funcs["rq_dashboard"]) == 1
        assert app.test_client().get("/admin/rq/", headers=basic(ADMIN, token)).status_code == 200


def test_other_paths_are_untouched(dash_app: Flask) -> None:
    assert dash_app.test_client().get("/api/conversations").headers["WWW-Authenticate"].startswith("Bearer")


def test_dashboard_redis_url_carries_luca_timeouts_and_heroku_tls() -> None:
    app = Flask(__name__)
    app.config.update(REDIS_SOCKET_TIMEOUT=0.5, REDIS_TLS_VERIFY=False)
    url = dashboard_redis_url("rediss://:p%40ss@redis.example:6380/2", app)
    options = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert options["password"] == "p@ss" and options["db"] == 2
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.5
    assert options["ssl_cert_reqs"] == "none"
