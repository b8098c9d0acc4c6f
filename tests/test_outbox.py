"""The job outbox: jobs Redis could not take are kept in the database and enqueued as soon as Redis answers."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from redis import Redis
from rq import Queue

from luca.extensions import breakers, db
from luca.jobs.outbox import drain as drain_outbox
from luca.models import JobOutbox
from tests.support import ROOT
from tests.support.api import signed, upload
from tests.support.apps import conversation_row, count_statements, provider_env, provider_overrides
from tests.support.processes import flask_command, luca_env

DEAD_REDIS = "redis://127.0.0.1:1/0"


def outbox_rows(app: Flask) -> list[tuple[str, str]]:
    """(kind, job_id) of every job in the outbox."""
    with app.app_context():
        rows = db.session.execute(sa.select(JobOutbox.kind, JobOutbox.job_id).order_by(JobOutbox.id)).all()
        db.session.remove()
    return [tuple(row) for row in rows]


@contextmanager
def count_commits(app: Flask) -> Iterator[list[str]]:
    """Collect a mark for every transaction the app's engine commits inside the block."""
    commits: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn: Any) -> None:
        commits.append("COMMIT")

    sa.event.listen(engine, "commit", record)
    try:
        yield commits
    finally:
        sa.event.remove(engine, "commit", record)


@pytest.fixture
def queue_prefix(redis_target) -> Iterator[str]:
    """A QUEUE_PREFIX of the test's own; its RQ keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    yield prefix
    redis_target.delete_queues(prefix)


def web_and_worker_env(app_factory, database_url: str, redis_url: str, primary: Any,
                       prefix: str) -> tuple[Flask, dict[str, str]]:
    """A web app in RQ mode and the environment of worker and CLI processes sharing its database and Redis."""
    app = app_factory(**provider_overrides(primary, REDIS_URL=redis_url, QUEUE_PREFIX=prefix, JOBS_RETRY_BACKOFF=0))
    env = luca_env(DATABASE_URL=database_url, REDIS_URL=redis_url, QUEUE_PREFIX=prefix, JOBS_RETRY_BACKOFF="0",
                   **provider_env(primary))
    return app, env


def ask_while_redis_is_down(web: Flask, kill: Callable[[], None]) -> str:
    """Stop Redis, then ask an untitled conversation its first question; return the conversation's id."""
    api = signed(web)
    conversation_id = api.new_conversation(title=None)["id"]
    kill()
    assert api.ask(conversation_id, "What is working capital?").status_code == 201
    assert outbox_rows(web) == [("titles", f"title-{conversation_id}")]
    return conversation_id


@pytest.mark.slow
def test_a_title_asked_for_while_redis_was_down_exists_within_30_s_of_redis_coming_back(
        app_factory, database_url: str, own_redis, servers) -> None:
    url, start, kill = own_redis
    web, env = web_and_worker_env(app_factory, database_url, url, servers[0], "outbox-")
    worker = subprocess.Popen([sys.executable, "worker.py", "--no-reconcile"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conversation_id = ask_while_redis_is_down(web, kill)
        start()
        back = time.monotonic()
        while conversation_row(web, conversation_id).title is None:
            assert time.monotonic() - back < 30, "no title 30 s after Redis came back"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert outbox_rows(web) == []


@pytest.mark.slow
def test_jobs_reconcile_right_after_redis_returns_enqueues_the_kept_job_despite_the_grace(
        app_factory, database_url: str, own_redis, servers) -> None:
    url, start, kill = own_redis
    web, env = web_and_worker_env(app_factory, database_url, url, servers[0], "outbox-")
    conversation_id = ask_while_redis_is_down(web, kill)
    start()
    assert web.config["JOBS_RECONCILE_GRACE"] == 60 and "JOBS_RECONCILE_GRACE" not in env
    output = flask_command(env, "jobs", "reconcile")
    assert "1 titles" in output
    assert outbox_rows(web) == []
    with Redis.from_url(url) as client:
        assert Queue("outbox-titles", connection=client).job_ids == [f"outbox-title-{conversation_id}"]
    worker = subprocess.run([sys.executable, "worker.py", "--burst"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=90)
    assert worker.returncode == 0, worker.stderr
    assert conversation_row(web, conversation_id).title


def test_with_the_redis_breaker_open_the_title_job_rides_the_answers_transaction(app_factory, servers) -> None:
    web = app_factory(**provider_overrides(servers[0], REDIS_URL=DEAD_REDIS, REDIS_BREAKER_RESET_TIMEOUT=600))
    api = signed(web)
    conversation = api.new_conversation(title=None)
    breakers.of(web).redis.open()
    with count_statements(web) as statements, count_commits(web) as commits:
        assert api.ask(conversation["id"], "What is working capital?").status_code == 201
    assert len(commits) == 2  # the question's and the answer's: the outbox row has no transaction of its own
    kept = [s for s in statements if "job_outbox" in s]
    assert len(kept) == 1 and statements.index(kept[0]) == len(statements) - 1  # after the answer's INSERT
    assert api.ask(conversation["id"], "And net working capital?").status_code == 201
    assert outbox_rows(web) == [("titles", f"title-{conversation['id']}")]  # one row however often it is asked


def test_an_enqueue_that_fails_after_the_commit_keeps_the_job_at_once(app_factory, servers, database_url) -> None:
    # A breaker that never opens: every enqueue really tries the dead Redis and fails after the commit.
    web = app_factory(**provider_overrides(servers[0], REDIS_URL=DEAD_REDIS, REDIS_BREAKER_FAIL_MAX=10_000))
    api = signed(web)
    conversation = api.new_conversation(title=None)
    with count_commits(web) as commits:
        assert api.ask(conversation["id"], "What is working capital?").status_code == 201
    # the question, the answer (on PostgreSQL it commits itself, autocommitted), then the outbox row
    assert len(commits) == (2 if database_url.startswith("postgresql") else 3)
    assert outbox_rows(web) == [("titles", f"title-{conversation['id']}")]


def test_a_file_uploaded_with_the_redis_breaker_open_rides_the_uploads_transaction(app_factory) -> None:
    web = app_factory(REDIS_URL=DEAD_REDIS, REDIS_BREAKER_RESET_TIMEOUT=600)
    api = signed(web)
    conversation = api.new_conversation()
    breakers.of(web).redis.open()
    with count_commits(web) as commits:
        file_id = upload(api, conversation["id"], "x.csv", b"a,b\n1,2\n")["id"]
    assert len(commits) == 1
    assert outbox_rows(web) == [("files", f"file-{file_id}")]


def test_with_redis_up_a_send_stays_at_its_statements_and_the_outbox_empty(app_factory, redis_target, queue_prefix,
                                                                          servers, database_url) -> None:
    web = app_factory(**provider_overrides(servers[0], QUEUE_PREFIX=queue_prefix, **redis_target.overrides()))
    api = signed(web)
    conversation = api.new_conversation(title=None)
    assert api.ask(conversation["id"], "What is VAT?").status_code == 201
    with count_statements(web) as statements:
        assert api.ask(conversation["id"], "And input VAT?").status_code == 201
    # the conversation with its messages, question, updated_at (with the question on PostgreSQL), answer
    assert len(statements) == (3 if database_url.startswith("postgresql") else 4), statements
    assert outbox_rows(web) == []
    queue = Queue(f"{queue_prefix}titles", connection=redis_target.client)
    assert queue.job_ids == [f"{queue_prefix}title-{conversation['id']}"]


def test_draining_enqueues_each_kept_job_once_and_deletes_its_row(app_factory, redis_target, queue_prefix,
                                                                  servers) -> None:
    settings = provider_overrides(servers[0], QUEUE_PREFIX=queue_prefix, **redis_target.overrides())
    down = app_factory(**{**settings, "REDIS_URL": DEAD_REDIS})
    api = signed(down)
    conversations = [api.new_conversation(title=None)["id"] for _ in range(2)]
    for conversation_id in conversations:
        assert api.ask(conversation_id, f"Question for {conversation_id}").status_code == 201
    assert len(outbox_rows(down)) == 2
    up = app_factory(**settings)
    assert sorted(drain_outbox(up)) == sorted(("titles", f"title-{c}") for c in conversations)
    assert outbox_rows(up) == []
    assert drain_outbox(up) == []
    queue = Queue(f"{queue_prefix}titles", connection=redis_target.client)
    assert sorted(queue.job_ids) == sorted(f"{queue_prefix}title-{c}" for c in conversations)
