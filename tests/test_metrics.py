"""GET /metrics: request, AI and state metrics in one process, and counts summed over two gunicorn workers."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from luca.metrics import record_ai_call
from luca.extensions import breakers, jobs
from tests.support.api import Api, create_user
from tests.support.processes import flask_command, gunicorn, luca_env
from tests.support.services import RedisTarget

# Runs once, on SQLite: what is counted does not depend on the database (SQL statement counts: on both).
pytestmark = pytest.mark.sqlite_only

CONVERSATION_ROUTE = "/api/conversations/<uuid:conversation_id>"
DURATION_COUNT = "luca_http_request_duration_seconds_count"


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by its name and labels."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the scrape does not have it."""
    return parse(text).get((name, frozenset(labels.items())))


def requests_for(text: str, route: str, status: str = "200", method: str = "GET") -> float:
    """How many requests the scrape counts for a route template and status (0 when none)."""
    return value(text, DURATION_COUNT, method=method, route=route, status=status) or 0.0


def scrape(client: FlaskClient, **headers: str) -> str:
    """GET /metrics and return the text; it must answer 200 in the Prometheus text format."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return response.get_data(as_text=True)


# -- one process ---------------------------------------------------------------------------------

def test_requests_are_counted_by_route_template_never_by_path(app: Flask, client: FlaskClient,
                                                               api: Api) -> None:
    conversation = api.new_conversation()
    before = scrape(client)
    for _ in range(3):
        assert api.get(f"/api/conversations/{conversation['id']}").status_code == 200
    assert client.get(f"/api/conversations/{conversation['id']}").status_code == 401
    assert api.get(f"/no/such/page/{conversation['id']}").status_code == 404
    after = scrape(client)

    assert requests_for(after, CONVERSATION_ROUTE) - requests_for(before, CONVERSATION_ROUTE) == 3
    assert requests_for(after, CONVERSATION_ROUTE, "401") - requests_for(before, CONVERSATION_ROUTE, "401") == 1
    assert requests_for(after, "<unmatched>", "404") - requests_for(before, "<unmatched>", "404") == 1
    assert (value(after, "luca_http_request_duration_seconds_sum", method="GET", route=CONVERSATION_ROUTE,
                  status="200") or 0) > 0
    assert value(after, "luca_http_request_duration_seconds_bucket", method="GET", route=CONVERSATION_ROUTE,
                 status="200", le="+Inf") == requests_for(after, CONVERSATION_ROUTE)
    assert conversation["id"] not in after and conversation["id"].replace("-", "") not in after
    assert 'route="/metrics"' not in after  # scrapes are not recorded


def test_unknown_methods_share_one_label(app: Flask, client: FlaskClient) -> None:
    before = scrape(client)
    assert client.open("/api/openapi.json", method="BREW").status_code == 405
    after = scrape(client)
    assert requests_for(after, "<unmatched>", "405", "OTHER") - requests_for(before, "<unmatched>", "405", "OTHER") == 1
    assert "BREW" not in after


def test_state_of_cache_breakers_and_queues_is_read_at_scrape_time(app: Flask, client: FlaskClient,
                                                                    api: Api) -> None:
    conversation = api.new_conversation()
    for _ in range(2):
        assert api.get(f"/api/conversations/{conversation['id']}").status_code == 200
    text = scrape(client)

    for tier in ("redis", "memory"):
        assert value(text, "luca_cache_hits_total", tier=tier) is not None
        assert value(text, "luca_cache_misses_total", tier=tier) is not None
    assert (value(text, "luca_cache_hits_total", tier="memory") or 0) >= 1
    assert value(text, "luca_ai_calls_saved_total") == 0
    for breaker in ("database", "external-api", "redis"):
        assert value(text, "luca_circuit_breaker_state", breaker=breaker) == 0
        assert value(text, "luca_circuit_breaker_failures_total", breaker=breaker) is not None
    for queue in ("titles", "files", "analytics"):
        for name in ("luca_queue_waiting", "luca_queue_active", "luca_queue_failed_total",
                     "luca_queue_completed_total"):
            assert value(text, name, queue=queue) is not None, (name, queue)
    assert value(text, "luca_redis_up") == 0  # the test app has no Redis


def test_an_open_breaker_and_its_failures(app: Flask, client: FlaskClient) -> None:
    before = scrape(client)
    with app.app_context():
        breaker = breakers.external
        for _ in range(breaker.fail_max):
            breaker.record(False, RuntimeError("webhook down"))
        assert breaker.current_state == "open"
    after = scrape(client)

    assert value(after, "luca_circuit_breaker_state", breaker="external-api") == 2
    failures = "luca_circuit_breaker_failures_total"
    assert value(after, failures, breaker="external-api") - value(before, failures, breaker="external-api") \
        == breaker.fail_max


def test_redis_up_and_the_redis_tier_with_real_redis(app_factory: Any, redis_target: RedisTarget) -> None:
    app = app_factory(**redis_target.overrides())
    text = scrape(app.test_client())
    assert value(text, "luca_redis_up") == 1
    assert value(text, "luca_cache_hits_total", tier="redis") is not None


def test_a_failing_source_is_left_out_of_the_scrape(app: Flask, client: FlaskClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("queue statistics unavailable")

    monkeypatch.setattr(jobs.of(app), "stats", broken)
    text = scrape(client)
    assert "luca_queue_waiting" not in text
    assert value(text, "luca_cache_hits_total", tier="memory") is not None
    assert value(text, "luca_circuit_breaker_state", breaker="database") == 0


def test_metrics_token_is_required_when_set(app_factory: Any) -> None:
    app = app_factory(METRICS_TOKEN="metrics-secret")
    client = app.test_client()

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic metrics-secret"},
                    {"Authorization": "Bearer metrics-secret-and-more"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "luca_" in scrape(client, Authorization="Bearer metrics-secret")


def test_record_ai_call_counts_calls_latency_and_tokens(app: Flask, client: FlaskClient) -> None:
    labels = {"provider": "metrics-test", "model": "metrics-model"}
    before = scrape(client)
    record_ai_call("metrics-test", "metrics-model", "ok", latency_s=0.4, tokens_in=120, tokens_out=30)
    record_ai_call("metrics-test", "metrics-model", "error", latency_s=5.0)
    record_ai_call("metrics-test", "metrics-model", "rejected")
    after = scrape(client)

    def delta(name: str, **extra: str) -> float:
        return (value(after, name, **extra) or 0) - (value(before, name, **extra) or 0)

    for outcome in ("ok", "error", "rejected"):
        assert delta("luca_ai_calls_total", **labels, outcome=outcome) == 1
    assert delta("luca_ai_latency_seconds_count", provider="metrics-test") == 2
    assert delta("luca_ai_latency_seconds_sum", provider="metrics-test") == pytest.approx(5.4)
    assert delta("luca_ai_tokens_total", provider="metrics-test", direction="in") == 120
    assert delta("luca_ai_tokens_total", provider="metrics-test", direction="out") == 30
    with pytest.raises(ValueError):
        record_ai_call("metrics-test", "metrics-model", "timeout")


def test_openmetrics_when_the_scraper_asks_for_it(app: Flask, client: FlaskClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


# -- two gunicorn workers --------------------------------------------------------------------------------

def fetch(url: str) -> tuple[int, str]:
    """GET url on a fresh connection (urllib sends Connection: close); return the status and body."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def worker_pids(directory: Path) -> set[str]:
    """The processes that have timed requests in the multiprocess directory."""
    return {re.sub(r"\D", "", path.stem) for path in directory.glob("histogram_*.db")}


def seed_stale_counts(directory: Path) -> None:
    """Leave a counter file behind in directory, as a run before this one would."""
    code = "from prometheus_client import Counter; Counter('luca_stale_total', 'left by an earlier run').inc()"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
                   check=True, timeout=60)
    assert list(directory.glob("counter_*.db"))


@pytest.mark.slow
@pytest.mark.parametrize("operator_dir", [False, True], ids=["temporary-dir", "operator-dir"])
def test_two_gunicorn_workers_report_the_summed_counts(tmp_path: Path, operator_dir: bool) -> None:
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", WEB_CONCURRENCY="2")
    flask_command(env, "db", "upgrade")
    if operator_dir:
        directory = tmp_path / "prometheus"
        directory.mkdir()
        seed_stale_counts(directory)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    else:
        temp_root = tmp_path / "tmp"
        temp_root.mkdir()
        env["TMPDIR"] = str(temp_root)  # where gunicorn.conf.py makes its temporary directory

    route = "/api/openapi.json"
    with gunicorn(env) as (base, _process):
        status, first = fetch(base + "/metrics")
        assert status == 200, first
        if not operator_dir:
            [directory] = temp_root.glob("luca-metrics-*")
        before = requests_for(first, route)

        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Fresh connections, several at once, until both workers have served some.
            while len(worker_pids(directory)) < 2 and sent < 400:
                statuses = list(pool.map(lambda _: fetch(base + route)[0], range(40)))
                assert statuses == [200] * 40
                sent += 40
        assert len(worker_pids(directory)) >= 2, "one worker served every request"

        status, text = fetch(base + "/metrics")
        assert status == 200
        assert requests_for(text, route) - before == sent
        assert "luca_stale" not in text  # on_starting emptied the operator's directory
        assert json.loads(fetch(base + route)[1])["openapi"]

    assert directory.exists() is operator_dir  # on_exit removed only the temporary directory


def sql_totals(client: FlaskClient, route: str) -> tuple[float, float]:
    """(requests, statements) recorded for a route so far."""
    values = {}
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f"luca_http_sql_statements_{kind}") and f'route="{route}"' in line:
                values[kind] = float(line.rsplit(" ", 1)[1])
    return values.get("count", 0.0), values.get("sum", 0.0)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_sql_statements_per_request_are_counted_by_route(app_factory) -> None:
    app = app_factory()
    user_id, token = create_user(app, "sql@example.com")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    client.post("/api/conversations", json={"title": "x"}, headers=headers)
    client.get("/api/conversations", headers=headers)
    before = sql_totals(client, "/api/conversations")
    client.get("/api/conversations", headers=headers)  # token and page cached: no statement
    cached = sql_totals(client, "/api/conversations")
    client.post("/api/conversations", json={"title": "y"}, headers=headers)  # one INSERT
    client.get("/api/conversations", headers=headers)  # the list query only
    after = sql_totals(client, "/api/conversations")
    assert cached == (before[0] + 1, before[1])
    assert after == (cached[0] + 2, cached[1] + 2)
