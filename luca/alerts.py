"""The four alerts operators asked for, and a Slack-compatible webhook told of each transition once.

Rules (thresholds configurable): Redis connection failures, job failure rate above 5 %,
any breaker open, cache hit rate below 40 %. Evaluation reads the statistics the cache,
breakers and queues already expose. A newly firing or resolved alert is posted to
ALERT_WEBHOOK_URL once — across processes when Redis is there (the first process to see a
transition claims it with SET NX) — from a background thread through the `external-api` breaker, so a slow or dead
webhook never slows a request. Budgets (luca/budgets.py) announce their 80 % and 100 % through the
same webhook with announce(), once per holder and month (claimed in the budgets table).
"""
from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from luca.extensions import breakers, cache, jobs, redis_gateway
from luca.jobs.queue import QUEUES
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)


@dataclass
class Alert:
    """One rule's verdict."""

    name: str
    firing: bool
    value: float | int | None
    threshold: float | int
    message: str


def redis_failures(config: dict[str, Any]) -> Alert:
    """Redis is configured but its connections fail (the `redis` breaker has failures or is open)."""
    threshold = config["ALERT_REDIS_FAILURES"]
    if not config.get("REDIS_URL"):
        return Alert("redis_connection_failures", False, 0, threshold, "Redis is not configured")
    redis = redis_gateway.client
    try:
        if redis is not None:
            redis.ping()
        answered = True
    except REDIS_ERRORS:
        answered = False
    breaker = breakers.redis
    failures = breaker.fail_counter
    down = not answered and (failures >= threshold or breaker.current_state == "open")
    return Alert("redis_connection_failures", down, failures, threshold,
                 f"Redis connections are failing ({failures} in a row); Luca is serving from memory"
                 if down else "Redis answers")


def job_failure_rate(config: dict[str, Any]) -> Alert:
    """Jobs that failed for good, as a share of finished jobs, across every queue."""
    threshold = config["ALERT_JOB_FAILURE_RATE"]
    stats = jobs.stats()
    names = [spec.stats_name for spec in QUEUES.values()]
    failed = sum(stats[n]["failed"] for n in names)
    done = failed + sum(stats[n]["completed"] for n in names)
    rate = failed / done if done else 0.0
    return Alert("job_failure_rate", rate > threshold, round(rate, 4), threshold,
                 f"{failed} of {done} jobs failed ({rate:.0%})")


def breakers_open(config: dict[str, Any]) -> Alert:
    """Any circuit breaker open."""
    opened = sorted(breaker.name for breaker in breakers.all() if breaker.current_state == "open")
    return Alert("breaker_open", bool(opened), len(opened), 1,
                 f"open: {', '.join(opened)}" if opened else "every breaker is closed")


def cache_hit_rate(config: dict[str, Any]) -> Alert:
    """The cache's hit rate, once there have been enough lookups to judge it."""
    threshold = config["ALERT_CACHE_HIT_RATE"]
    stats = cache.get_stats()
    lookups = sum(stats[t]["hits"] + stats[t]["misses"] for t in ("redis", "memory"))
    rate = stats["hitRate"]
    low = rate is not None and lookups >= config["ALERT_MIN_SAMPLES"] and rate < threshold
    return Alert("cache_hit_rate_low", low, rate, threshold,
                 f"cache hit rate {rate:.0%} over {lookups} lookups" if rate is not None else "no lookups yet")


RULES = (redis_failures, job_failure_rate, breakers_open, cache_hit_rate)


class AlertMonitor:
    """Evaluates the rules and posts each transition to the webhook once."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.url: str | None = app.config.get("ALERT_WEBHOOK_URL")
        self.timeout: float = app.config["ALERT_WEBHOOK_TIMEOUT"]
        self._states: dict[str, bool] = {}
        self._since: dict[str, str] = {}
        self._lock = threading.Lock()
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=100)
        self._sender: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0
        if self.url and not app.config.get("TESTING"):  # evaluated from the first request of each process on
            app.before_request(self.start_ticking)

    def evaluate(self) -> list[dict[str, Any]]:
        """Every rule's current verdict; transitions are queued for the webhook."""
        alerts = []
        for rule in RULES:
            try:
                alert = rule(self.app.config)
            except Exception as exc:  # noqa: BLE001 - one broken source must not hide the other alerts
                log.warning("[Alerts] rule %s could not be evaluated: %s", rule.__name__, type(exc).__name__)
                continue
            if self._changed(alert):
                self._notify(alert)
            alerts.append({**asdict(alert), "since": self._since.get(alert.name)})
        return alerts

    def _changed(self, alert: Alert) -> bool:
        """Whether this alert just changed state here, and no other process has announced it yet."""
        with self._lock:
            previous = self._states.get(alert.name)
            self._states[alert.name] = alert.firing
            if previous == alert.firing or (previous is None and not alert.firing):
                return False
            self._since[alert.name] = datetime.now(UTC).isoformat()
        return self._claim(alert)

    def _claim(self, alert: Alert) -> bool:
        """Claim the announcement of a transition across processes (every process sees it on its own)."""
        gateway = redis_gateway.of(self.app)
        redis = gateway.client
        if redis is None:
            return True
        state, other = ("firing", "resolved") if alert.firing else ("resolved", "firing")
        window = int(2 * self.app.config["ALERT_CHECK_INTERVAL"] + 30)
        try:
            claimed = redis.set(gateway.key("alerts", alert.name, state), "1", nx=True, ex=window)
            if claimed:
                redis.delete(gateway.key("alerts", alert.name, other))
            return bool(claimed)
        except REDIS_ERRORS:
            return True  # without Redis each process announces what it sees

    def announce(self, name: str, firing: bool, value: float | int | None, threshold: float | int,
                 message: str) -> None:
        """Post an alert raised outside the rules, whose caller claimed its transition once (a budget's 80 %)."""
        self._notify(Alert(name, firing, value, threshold, message))

    def _notify(self, alert: Alert) -> None:
        """Queue a Slack-compatible message for the sender thread."""
        log.warning("[Alerts] %s %s: %s", alert.name, "FIRING" if alert.firing else "RESOLVED", alert.message)
        if not self.url:
            return
        icon = ":rotating_light:" if alert.firing else ":white_check_mark:"
        payload = {"text": f"{icon} Luca alert {alert.name} {'FIRING' if alert.firing else 'RESOLVED'}: "
                           f"{alert.message}", "alert": asdict(alert)}
        try:
            self._outbox.put_nowait(payload)
        except queue.Full:
            log.warning("[Alerts] webhook outbox full; dropping %s", alert.name)
            return
        self._start_sender()

    def _start_sender(self) -> None:
        with self._lock:
            if self._sender is None or not self._sender.is_alive():
                self._sender = threading.Thread(target=self._send_forever, name="luca-alerts", daemon=True)
                self._sender.start()

    def _send_forever(self) -> None:
        external = breakers.of(self.app).external
        while True:
            payload = self._outbox.get()
            if payload is None or self._stop.is_set():  # close() was called
                return
            try:
                external.call(self._post, payload)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - the webhook is best effort; the breaker counts it
                log.warning("[Alerts] webhook post failed: %s", type(exc).__name__)

    def _post(self, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url or "", data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - operator's URL
            response.read()

    def start_ticking(self) -> None:
        """Evaluate every ALERT_CHECK_INTERVAL seconds in a background thread (once per process)."""
        with self._lock:
            if self._ticker is not None:
                return
            self._ticker = threading.Thread(target=self._tick_forever, name="luca-alert-ticker", daemon=True)
            self._ticker.start()

    def close(self) -> None:
        """Stop the ticker and the sender (a post in flight ends within ALERT_WEBHOOK_TIMEOUT)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(None)  # wakes the sender
        with self._lock:
            ticker = self._ticker
        if ticker is not None:
            ticker.join()

    def _tick_forever(self) -> None:
        while not self._stop.wait(self.app.config["ALERT_CHECK_INTERVAL"]):
            try:
                with self.app.app_context():
                    self.evaluate()
            except Exception:  # noqa: BLE001 - keep ticking
                log.exception("[Alerts] evaluation failed")
