"""Fault drills, shortened (`python -m bench.faults --fast`): each breaks one part of a real stack under load.

Every drill runs its own PostgreSQL, Redis, gunicorn, RQ workers and provider servers on spare
ports (bench/faults_stack.py). Each test asserts that nothing the API acknowledged was lost and
that the drill's own conditions held; a failure prints the drill's whole report and the logs.
Without PostgreSQL's server binaries or redis-server the tests skip, unless LUCA_REQUIRE_SERVICES=1.

This is the one test module that imports bench: the drills are bench's (``make faults`` runs them
at full length), and these tests are their shortened run, so they call the drills themselves
rather than a copy of them.
"""
from __future__ import annotations

import pytest

from bench.faults_drills import (
    FAST,
    LATENCY_MARGIN,
    Report,
    gunicorn_hup,
    postgres_stopped,
    provider_down,
    redis_killed,
    worker_killed,
)
from bench.faults_stack import BASE_SETTINGS, missing_binaries
from tests.support.services import service_missing

pytestmark = pytest.mark.slow  # each drill starts a whole stack and runs it for about 20 s


@pytest.fixture(autouse=True)
def binaries() -> None:
    """Skip (or fail, with LUCA_REQUIRE_SERVICES=1) where the drills cannot start their services."""
    problem = missing_binaries()
    if problem:
        service_missing(problem)


def assert_drill(report: Report) -> None:
    """Requests were sent, nothing was lost, every condition held."""
    account = report.describe()
    assert report.sent > 0, account
    assert report.lost == 0, account
    assert all(report.checks.values()), account


def test_redis_killed_under_load_loses_no_title_and_no_file() -> None:
    report = redis_killed(FAST)
    assert all(status.startswith("2") for status in report.statuses), report.describe()
    assert_drill(report)


def test_postgres_stopped_under_load_gives_fast_503s_and_keeps_every_acknowledged_write() -> None:
    report = postgres_stopped(FAST)
    assert "503" in report.statuses, report.describe()
    assert report.fault_latency < float(BASE_SETTINGS["DATABASE_CONNECT_TIMEOUT"]) + LATENCY_MARGIN, report.describe()
    assert_drill(report)


def test_a_provider_down_is_invisible_to_users_and_its_breaker_opens_then_closes() -> None:
    report = provider_down(FAST)
    assert set(report.statuses) == {"201"}, report.describe()
    assert_drill(report)


def test_a_worker_killed_mid_job_leaves_every_file_ready() -> None:
    report = worker_killed(FAST)
    assert report.tracked == FAST.files, report.describe()
    assert_drill(report)


def test_gunicorn_hup_under_load_fails_no_request() -> None:
    report = gunicorn_hup(FAST)
    assert all(status.startswith("2") for status in report.statuses), report.describe()
    assert_drill(report)
