"""Prometheus metrics at GET /metrics: HTTP requests, AI calls, and the state of cache, breakers and queues.

Two kinds of metric, kept apart so nothing is counted twice:

* Events (requests, AI calls, breaker failures) are prometheus_client Counters and
  Histograms made once, here, in the default registry. Under gunicorn, gunicorn.conf.py
  sets PROMETHEUS_MULTIPROC_DIR before the app is imported, so each worker writes them to
  files of its own there, and a scrape (answered by any one worker) sums every worker's
  files through a MultiProcessCollector made for that scrape. Without the variable
  (flask run, tests) they are read from the in-process default registry.
* State (cache hits and misses, AI calls saved, breaker states, queue depths and outcomes,
  Redis) is read at scrape time by StateCollector from the sources Luca already shares
  through Redis, so it is never summed across workers. Without Redis those sources count
  per process, and the figures are those of the worker that answered the scrape. Breaker
  states of `database`, `external-api` and `redis` are always that worker's own view;
  `AI-<provider>` states are shared through Redis.

Requests are counted by the duration histogram's `_count` (there is no separate requests
counter): rate(luca_http_request_duration_seconds_count[5m]) is the request rate. A request
is timed from before_request to after_request, so a streamed answer is measured until its
view returns the response, not until the stream ends. The /metrics scrape is not recorded.

A breaker counts its failures in its own process, so each worker adds its new failures to
the event counter luca_circuit_breaker_failures_total after each request and at each
scrape (failures of a background job show up with that worker's next request).
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from flask.typing import ResponseReturnValue
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN
from sqlalchemy import event

from luca.errors import error_response
from luca.extensions import breakers, cache, db, jobs, redis_gateway
from luca.jobs.queue import QUEUES
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

ENDPOINT = "luca_metrics"
START_KEY = "luca_metrics_started"
UNMATCHED = "<unmatched>"
AI_OUTCOMES = frozenset({"ok", "error", "rejected"})
# Any other method is labelled OTHER, so a client cannot invent label values.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BREAKER_STATES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1, STATE_OPEN: 2}
CACHE_TIERS = ("redis", "memory")

HTTP_DURATION = Histogram(
    "luca_http_request_duration_seconds",
    "Seconds from the start of a request until its view returned a response (its _count counts requests).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
AI_CALLS = Counter("luca_ai_calls_total", "AI provider calls by outcome: ok, error, or rejected by an open breaker.",
                   ["provider", "model", "outcome"])
AI_LATENCY = Histogram("luca_ai_latency_seconds", "Seconds an AI provider took to answer.", ["provider"],
                       buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0))
AI_TOKENS = Counter("luca_ai_tokens_total", "Tokens sent to (in) and received from (out) AI providers.",
                    ["provider", "direction"])
SQL_STATEMENTS = Histogram(
    "luca_http_sql_statements",
    "SQL statements a request ran until its view returned (sum / count is the mean per request).",
    ["route"], buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50),
)
SQL_KEY = "luca_metrics_sql"
BREAKER_FAILURES = Counter("luca_circuit_breaker_failures_total", "Failed calls through each circuit breaker.",
                           ["breaker"])

# Each breaker's failure count already added to BREAKER_FAILURES by this process.
_published: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_publish_lock = threading.Lock()


def record_ai_call(provider: str, model: str, outcome: str, latency_s: float | None = None,
                   tokens_in: int = 0, tokens_out: int = 0) -> None:
    """Count one AI call: its outcome ("ok", "error", "rejected"), latency and tokens."""
    if outcome not in AI_OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(AI_OUTCOMES)}, not {outcome!r}")
    AI_CALLS.labels(provider, model, outcome).inc()
    if latency_s is not None:
        AI_LATENCY.labels(provider).observe(latency_s)
    if tokens_in:
        AI_TOKENS.labels(provider, "in").inc(tokens_in)
    if tokens_out:
        AI_TOKENS.labels(provider, "out").inc(tokens_out)


def register_metrics(app: Flask) -> None:
    """Time every request of the app and serve GET /metrics."""
    # First among the before_request hooks (an earlier one may answer 401), last among after_request ones.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request_funcs.setdefault(None, []).insert(0, record_request)
    app.add_url_rule("/metrics", endpoint=ENDPOINT, view_func=metrics_view, methods=["GET"])
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", count_statement)


def count_statement(*_args: Any) -> None:
    """Count a statement against the request it runs in (background threads have no request)."""
    if has_request_context() and hasattr(g, SQL_KEY):
        setattr(g, SQL_KEY, getattr(g, SQL_KEY) + 1)


def start_timer() -> None:
    """Note when the request started, and start counting its SQL statements."""
    setattr(g, START_KEY, time.perf_counter())
    setattr(g, SQL_KEY, 0)


def record_request(response: Response) -> Response:
    """Observe the request's duration under its method, route template and status."""
    started = g.pop(START_KEY, None)
    if started is None or request.endpoint == ENDPOINT:
        return response
    try:
        method = request.method if request.method in HTTP_METHODS else "OTHER"
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        HTTP_DURATION.labels(method, route, str(response.status_code)).observe(time.perf_counter() - started)
        SQL_STATEMENTS.labels(route).observe(g.pop(SQL_KEY, 0))
        publish_breaker_failures(current_app)
    except Exception:  # noqa: BLE001 - metrics never fail a request
        log.debug("[Metrics] could not record a request", exc_info=True)
    return response


def publish_breaker_failures(app: Flask) -> None:
    """Add each breaker's failures since the last call to luca_circuit_breaker_failures_total."""
    with _publish_lock:
        for breaker in breakers.of(app).all():
            failures, seen = breaker.failures, _published.get(breaker)
            if seen is None or failures > seen:
                # The first call makes the series, at 0, before the breaker's first failure.
                BREAKER_FAILURES.labels(breaker.name).inc(failures - (seen or 0))
                _published[breaker] = failures


def metrics_view() -> ResponseReturnValue:
    """Every metric, in the Prometheus text format (OpenMetrics when the scraper asks for it)."""
    token = current_app.config.get("METRICS_TOKEN")
    if token and not bearer_matches(token):
        return error_response(401, "unauthorized", "send the metrics token as 'Authorization: Bearer <token>'",
                              headers={"WWW-Authenticate": 'Bearer realm="luca-metrics"'})
    try:
        publish_breaker_failures(current_app)
    except Exception:  # noqa: BLE001 - a failing source never breaks the scrape
        log.debug("[Metrics] could not publish breaker failures", exc_info=True)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(scrape_registry()), headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def bearer_matches(token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def multiprocess_dir() -> str | None:
    """The directory worker processes share their metrics through (set by gunicorn.conf.py), if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: the event metrics of every worker plus the state read now."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(REGISTRY)  # a registry is itself a collector
    registry.register(StateCollector())
    return registry


class StateCollector:
    """Cache, breaker, queue and Redis state, read at scrape time (needs an app context)."""

    def collect(self) -> Iterable[Metric]:
        """Each source's metrics; a source that fails is logged and left out."""
        sources: list[Callable[[], list[Metric]]] = [cache_metrics, breaker_metrics, queue_metrics, redis_metrics]
        for source in sources:
            try:
                metrics = source()
            except Exception:  # noqa: BLE001 - a failing source never breaks the scrape
                log.debug("[Metrics] skipped %s", source.__name__, exc_info=True)
                continue
            yield from metrics


def cache_metrics() -> list[Metric]:
    """Hits and misses per cache tier, and AI calls saved by deduplication."""
    stats = cache.get_stats()
    hits = CounterMetricFamily("luca_cache_hits_total", "Cache lookups that found a value, per tier.",
                               labels=["tier"])
    misses = CounterMetricFamily("luca_cache_misses_total", "Cache lookups that found nothing, per tier.",
                                 labels=["tier"])
    for tier in CACHE_TIERS:
        hits.add_metric([tier], stats[tier]["hits"])
        misses.add_metric([tier], stats[tier]["misses"])
    saved = CounterMetricFamily("luca_ai_calls_saved_total",
                                "AI calls deduplication saved (stored answers served, waits on another request).",
                                value=stats["dedup"]["savedCalls"])
    return [hits, misses, saved]


def breaker_metrics() -> list[Metric]:
    """Each circuit breaker's state: 0 closed, 1 half-open, 2 open."""
    state = GaugeMetricFamily("luca_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                              labels=["breaker"])
    for breaker in breakers.all():
        state.add_metric([breaker.name], BREAKER_STATES[breaker.current_state])
    return [state]


def queue_metrics() -> list[Metric]:
    """Waiting and active jobs, and completed and failed ones, per queue."""
    stats = jobs.stats()
    families = {
        "waiting": GaugeMetricFamily("luca_queue_waiting", "Jobs waiting in each queue.", labels=["queue"]),
        "active": GaugeMetricFamily("luca_queue_active", "Jobs running from each queue.", labels=["queue"]),
        "failed": CounterMetricFamily("luca_queue_failed_total", "Jobs that failed their last attempt.",
                                      labels=["queue"]),
        "completed": CounterMetricFamily("luca_queue_completed_total", "Jobs that completed.", labels=["queue"]),
    }
    for spec in QUEUES.values():
        entry = stats[spec.stats_name]
        for key, family in families.items():
            family.add_metric([spec.name], entry[key])
    return list(families.values())


def redis_metrics() -> list[Metric]:
    """Whether Redis (REDIS_URL) answers a PING through the `redis` breaker."""
    redis = redis_gateway.client
    up = 0
    if redis is not None:
        try:
            redis.ping()
            up = 1
        except REDIS_ERRORS:
            pass
    return [GaugeMetricFamily("luca_redis_up", "1 when Redis is configured and answers a PING, else 0.", value=up)]
