"""The app factory, configuration, error shape and the OpenAPI document."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import config
from config import normalise_database_url
from luca.extensions import SERVICES, cache, openapi
from tests.support import ROOT
from tests.support.api import create_user

# Runs once, on SQLite: the error shape and the OpenAPI document do not depend on the database.
pytestmark = pytest.mark.sqlite_only


@pytest.mark.parametrize("given,expected", [
    ("postgres://u:p@host:5432/db", "postgresql+psycopg://u:p@host:5432/db"),
    ("postgresql://host/db", "postgresql+psycopg://host/db"),
    ("postgresql+psycopg://host/db", "postgresql+psycopg://host/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("", None),
    (None, None),
])
def test_database_url_is_normalised_to_psycopg3(given, expected) -> None:
    assert normalise_database_url(given) == expected


def test_without_database_url_the_default_is_a_sqlite_file_in_instance(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reloaded = importlib.reload(config)
    try:
        assert reloaded.Config.SQLALCHEMY_DATABASE_URI == f"sqlite:///{ROOT / 'instance' / 'luca.db'}"
    finally:
        importlib.reload(config)


def test_switches_are_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DISABLE_CACHE", "true")
    monkeypatch.setenv("DISABLE_QUEUES", "0")
    monkeypatch.setenv("REDIS_MAX_RETRIES", "7")
    reloaded = importlib.reload(config)
    try:
        assert (reloaded.Config.DISABLE_CACHE, reloaded.Config.DISABLE_QUEUES, reloaded.Config.REDIS_MAX_RETRIES) == \
            (True, False, 7)
    finally:
        monkeypatch.undo()
        importlib.reload(config)


def test_wsgi_module_exposes_the_app() -> None:
    code = "import wsgi, flask; assert isinstance(wsgi.app, flask.Flask); print(sorted(wsgi.app.blueprints))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "sqlite://"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'admin'" in result.stdout and "'conversations'" in result.stdout


def test_two_apps_built_in_one_process_each_serve_with_services_of_their_own(app_factory) -> None:
    first, second = app_factory(), app_factory()  # the same settings, twice
    for extension in (*SERVICES, openapi):
        assert extension.of(first) is not extension.of(second), extension
    for app in (first, second):  # every hook once, though the web and rq-dashboard blueprints are shared
        for hooks in (app.before_request_funcs[None], app.after_request_funcs[None]):
            assert len(hooks) == len(set(hooks))
    cache.of(first).set("only-in-first", "x")
    assert cache.of(second).get("only-in-first") is None
    for number, app in enumerate((first, second)):
        _, token = create_user(app, f"user{number}@example.com")
        response = app.test_client().get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.get_json()["email"] == f"user{number}@example.com"


def test_unexpected_errors_are_json_500(app, client) -> None:
    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = client.get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "an unexpected error occurred"}}


def test_openapi_document_describes_every_endpoint(client) -> None:
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path, method in [("/api/me", "get"), ("/api/conversations", "get"), ("/api/conversations", "post"),
                         ("/api/conversations/{conversation_id}", "patch"),
                         ("/api/conversations/{conversation_id}", "delete"),
                         ("/api/conversations/{conversation_id}/messages", "get"),
                         ("/api/conversations/{conversation_id}/messages", "post"),
                         ("/api/search", "get"), ("/api/admin/users", "get")]:
        assert method in paths[path], (path, method)
    listing = paths["/api/conversations"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "cursor", "metadata", "q"}
    body_ref = paths["/api/conversations/{conversation_id}/messages"]["post"]["requestBody"]
    assert body_ref["content"]["application/json"]["schema"]["$ref"].split("/")[-1] in spec["components"]["schemas"]


def test_openapi_document_describes_the_admin_statistics_fields(client) -> None:
    spec = client.get("/api/openapi.json").get_json()
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].split("/")[-1]] if "$ref" in schema else schema

    def answer(path: str, method: str = "get") -> dict:
        return resolve(spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"])

    def fields(schema: dict, *path: str) -> set[str]:
        for name in path:
            schema = resolve(schema["properties"][name]) if name != "*" else resolve(schema["additionalProperties"])
        return set(resolve(schema)["properties"])

    queues = answer("/api/admin/queue-stats")
    assert set(queues["properties"]) == {"titleGeneration", "fileProcessing", "analytics", "redis", "mode"}
    assert {"waiting", "active", "completed", "failed", "failureRate"} <= fields(queues, "titleGeneration")
    breakers = answer("/api/admin/breakers")
    assert set(breakers["properties"]) == {"database", "externalAPI", "redis", "aiProviders"}
    assert {"consecutiveFailures", "failMax", "retryAfter"} <= fields(breakers, "database", "stats")
    assert fields(breakers, "aiProviders", "*") == {"state", "stats"}
    assert fields(answer("/api/admin/breakers/{name}/reset", "post")) == {"name", "state", "stats"}
    cache = answer("/api/admin/cache-stats")
    assert {"hitRate", "memory", "redis", "dedup"} <= set(cache["properties"])
    assert {"savedCalls", "hitRate"} <= fields(cache, "dedup")
    alerts = answer("/api/admin/alerts")
    assert {"name", "firing", "value", "threshold", "message", "since"} == set(
        resolve(alerts["properties"]["alerts"]["items"])["properties"])


def test_docs_page_lists_the_endpoints(client) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert "/api/conversations/{conversation_id}/messages" in page.get_data(as_text=True)
