"""The Breaker itself: concurrent calls, one half-open trial, what counts as a failure, logging."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import openai
import pytest
from flask import Flask
from pybreaker import CircuitBreakerError

from config import TestConfig
from luca import create_app
from luca.ai.providers import is_provider_failure
from luca.breakers import Breaker
from luca.extensions import breakers, shutdown


def failing() -> None:
    """A guarded call that fails."""
    raise ConnectionError("down")


def trip(breaker: Breaker) -> None:
    """Fail calls until the breaker opens."""
    for _ in range(breaker.fail_max):
        with pytest.raises((ConnectionError, CircuitBreakerError)):
            breaker.call(failing)


def test_concurrent_calls_through_one_breaker_overlap() -> None:
    breaker = Breaker("test", fail_max=5, reset_timeout=60)
    inside, most, lock = 0, 0, threading.Lock()
    everyone_in = threading.Barrier(8, timeout=5)

    def slow() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        everyone_in.wait()  # would time out if calls ran one at a time
        with lock:
            inside -= 1

    threads = [threading.Thread(target=breaker.call, args=(slow,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 8


def test_breaker_opens_after_fail_max_straight_failures() -> None:
    breaker = Breaker("test", fail_max=3, reset_timeout=60)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(failing)
    assert breaker.current_state == "closed"
    with pytest.raises(ConnectionError):
        breaker.call(failing)
    assert breaker.current_state == "open"
    with pytest.raises(CircuitBreakerError):
        breaker.call(lambda: "never called")


def test_a_success_resets_the_straight_failure_count() -> None:
    breaker = Breaker("test", fail_max=3, reset_timeout=60)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(failing)
    breaker.call(lambda: None)
    with pytest.raises(ConnectionError):
        breaker.call(failing)
    assert breaker.current_state == "closed"


def test_half_open_lets_exactly_one_trial_through() -> None:
    breaker = Breaker("test", fail_max=1, reset_timeout=0.2)
    trip(breaker)
    time.sleep(0.25)
    release = threading.Event()
    trial_started = threading.Event()

    def trial() -> str:
        trial_started.set()
        release.wait(5)
        return "ok"

    worker = threading.Thread(target=breaker.call, args=(trial,))
    worker.start()
    assert trial_started.wait(5)
    assert breaker.current_state == "half-open"
    rejected = 0
    for _ in range(5):
        try:
            breaker.call(lambda: None)
        except CircuitBreakerError:
            rejected += 1
    release.set()
    worker.join()
    assert rejected == 5
    assert breaker.current_state == "closed"


def test_a_failed_trial_opens_again() -> None:
    breaker = Breaker("test", fail_max=1, reset_timeout=0.2)
    trip(breaker)
    time.sleep(0.25)
    with pytest.raises(ConnectionError):
        breaker.call(failing)
    assert breaker.current_state == "open"
    assert breaker.seconds_until_half_open() > 0


def test_errors_that_are_not_failures_do_not_count() -> None:
    breaker = Breaker("test", fail_max=1, reset_timeout=60, is_failure=lambda exc: not isinstance(exc, ValueError))

    def bad_request() -> None:
        raise ValueError("our fault")

    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call(bad_request)
    assert breaker.current_state == "closed"


def test_a_call_given_up_is_no_verdict_and_frees_the_trial() -> None:
    breaker = Breaker("test", fail_max=1, reset_timeout=0.2)
    trip(breaker)
    time.sleep(0.25)
    trial = breaker.allow()
    breaker.record(trial, GeneratorExit())  # a stream closed before its end
    assert (trial, breaker.failures, breaker.successes, breaker.current_state) == (True, 1, 0, "half-open")
    assert breaker.allow() is True  # the next call is the trial


@pytest.fixture
def memory_app() -> Iterator[Flask]:
    """An app on an in-memory SQLite database (these breakers need no tables)."""
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    yield app
    shutdown(app)


def test_an_ai_breaker_counts_only_provider_failures_whoever_asked_for_it_first(memory_app: Flask) -> None:
    breaker = breakers.of(memory_app).ai("example")  # as the admin reset or the statistics ask for it
    for _ in range(breaker.fail_max):
        with pytest.raises(openai.APIStatusError), breaker.guard():
            raise status_error(400)  # our request's fault, not the provider's
    assert (breaker.current_state, breaker.failures, breaker.successes) == ("closed", 0, breaker.fail_max)


def test_an_open_breaker_other_than_the_database_is_a_503_that_names_it(memory_app: Flask) -> None:
    @memory_app.get("/through-the-webhook")
    def through_the_webhook() -> str:
        return breakers.external.call(lambda: "posted")

    breakers.of(memory_app).external.open()
    response = memory_app.test_client().get("/through-the-webhook")
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "service_unavailable" and "breaker external-api is open" in error["message"]


def status_error(status: int) -> openai.APIStatusError:
    """An SDK error as the provider's HTTP status would raise it."""
    import httpx2

    request = httpx2.Request("POST", "http://provider/v1/chat/completions")
    return openai.APIStatusError("error", response=httpx2.Response(status, request=request), body=None)


@pytest.mark.parametrize("status,counts", [(400, False), (404, False), (422, False), (401, True), (403, True),
                                           (429, True), (500, True), (502, True), (503, True)])
def test_which_provider_statuses_count_as_failures(status: int, counts: bool) -> None:
    assert is_provider_failure(status_error(status)) is counts


def test_timeouts_and_connection_errors_count_as_failures() -> None:
    import httpx2

    request = httpx2.Request("POST", "http://provider/v1/chat/completions")
    assert is_provider_failure(openai.APITimeoutError(request=request))
    assert is_provider_failure(openai.APIConnectionError(request=request))


def test_state_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    breaker = Breaker("AI-example", fail_max=1, reset_timeout=0.1)
    with caplog.at_level(logging.INFO, logger="luca.breakers"):
        trip(breaker)
        time.sleep(0.15)
        breaker.call(lambda: None)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("[CircuitBreaker] AI-example OPEN") for line in lines)
    assert any(line.startswith("[CircuitBreaker] AI-example HALF-OPEN") for line in lines)
    assert "[CircuitBreaker] AI-example CLOSED - service recovered" in lines


def test_reset_closes_an_open_breaker() -> None:
    breaker = Breaker("test", fail_max=1, reset_timeout=60)
    trip(breaker)
    breaker.reset()
    assert breaker.current_state == "closed"
    assert breaker.call(lambda: 7) == 7


def test_stats_report_state_counts_and_last_failure() -> None:
    breaker = Breaker("test", fail_max=2, reset_timeout=60)
    breaker.call(lambda: None)
    trip(breaker)
    stats = breaker.stats()
    assert stats["state"] == "open"
    assert stats["stats"]["successes"] == 1 and stats["stats"]["failures"] == 2
    assert stats["stats"]["lastFailure"].startswith("ConnectionError")
    assert stats["stats"]["openedAt"] is not None and stats["stats"]["retryAfter"] > 0
