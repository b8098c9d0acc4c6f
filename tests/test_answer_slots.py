"""Bounded answers: at most AI_MAX_CONCURRENT_PER_USER answers in flight per user, across processes.

The provider hangs (20 s) so that answers stay in flight; each test wakes it when done.
"""
from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from luca.extensions import db, slots
from tests.support import ROOT
from tests.support.api import Api, http_request, new_conversation_over_http, signed
from tests.support.apps import provider_env, provider_overrides
from tests.support.processes import flask_command, gunicorn, luca_env
from tests.support.services import RedisTarget

# Runs once, on SQLite: answer slots live in Redis or memory (the answer path runs on both databases elsewhere).
pytestmark = pytest.mark.sqlite_only

HANG = 20  # seconds the provider takes to answer while answers are held in flight


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll condition until it holds; fail after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


@contextmanager
def in_flight(server: Any, requests: list[Callable[[], Any]]) -> Iterator[list[Any]]:
    """Run each request in a thread until all of them wait at the provider; on exit wake them and wait."""
    results: list[Any] = [None] * len(requests)

    def run(index: int) -> None:
        results[index] = requests[index]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: server.stats()["active"] == len(requests), f"{len(requests)} answers in flight")
        yield results
        assert all(thread.is_alive() for thread in threads), "an answer in flight ended early"
    finally:
        server.reset()  # cuts the hanging answers short: they end 503
        for thread in threads:
            thread.join(30)


def asking(app: Flask, api: Api, conversation_id: str, content: str, **body: Any) -> Callable[[], Any]:
    """A request (for a thread of its own: a test client of its own) that sends a question."""
    return lambda: Api(app.test_client(), api.token, api.user_id).ask(conversation_id, content, **body)


def hold_answers(app: Flask, api: Api, count: int) -> list[Callable[[], Any]]:
    """count answers for the user, every other one streamed, each in a conversation of its own."""
    return [asking(app, api, api.new_conversation()["id"], f"question {i}", stream=i % 2 == 1) for i in range(count)]


def questions_stored(app: Flask, user_id: int) -> int:
    """How many questions the user has stored."""
    with app.app_context():
        return db.session.execute(sa.text("SELECT count(*) FROM messages WHERE user_id = :u AND role = 'user'"),
                                  {"u": user_id}).scalar_one()


def slots_in_redis(target: RedisTarget, user_id: int) -> int:
    """How many slots Redis holds for the user, expired leases included."""
    return target.client.zcard(f"{target.prefix}slots:{user_id}")


def assert_refused(response: Any) -> None:
    """The answer was refused because all of the user's slots are in use."""
    assert response.status_code == 429, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "too_many_concurrent_answers"
    assert "at most 3 answers at a time per user" in error["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 10


@pytest.fixture(params=["memory", "redis"])
def slot_app(request, app_factory, servers) -> Flask:
    """An app on the primary test provider, its slots counted in the process or in Redis."""
    primary, _ = servers
    extra = request.getfixturevalue("redis_target").overrides() if request.param == "redis" else {}
    return app_factory(**provider_overrides(primary, **extra, AI_TIMEOUT=60.0))


def test_a_fourth_concurrent_answer_is_refused_at_once_and_stores_nothing(slot_app, servers) -> None:
    primary, _ = servers
    api = signed(slot_app, "alice@example.com")
    conversation = api.new_conversation()["id"]
    primary.configure(hang_s=HANG)
    with in_flight(primary, hold_answers(slot_app, api, 3)):
        primary.configure(hang_s=0)  # were it let through, the fourth would be answered at once
        assert_refused(api.ask(conversation, "a fourth question"))
        assert_refused(api.ask(conversation, "a fourth, streamed", stream=True))
        assert questions_stored(slot_app, api.user_id) == 3
        assert primary.stats()["requests"] == 3


def test_a_retry_past_the_cap_is_refused_and_stores_no_answer(slot_app, servers) -> None:
    primary, _ = servers
    api = signed(slot_app, "alice@example.com")
    conversation = api.new_conversation()["id"]
    question = api.ask(conversation, "answer me twice").get_json()["message"]
    primary.configure(hang_s=HANG)
    with in_flight(primary, hold_answers(slot_app, api, 3)):
        primary.configure(hang_s=0)
        assert_refused(api.post(f"/api/conversations/{conversation}/messages/{question['id']}/retry",
                                json={"cache": False}))
        messages = api.get(f"/api/conversations/{conversation}/messages").get_json()["items"]
        assert [m["role"] for m in messages] == ["assistant", "user"]


def test_another_user_is_not_limited_by_a_full_user(slot_app, servers) -> None:
    primary, _ = servers
    alice, bob = signed(slot_app, "alice@example.com"), signed(slot_app, "bob@example.com")
    primary.configure(hang_s=HANG)
    with in_flight(primary, hold_answers(slot_app, alice, 3)):
        primary.configure(hang_s=0)
        response = bob.ask(bob.new_conversation()["id"], "am I held up?")
        assert response.status_code == 201
        assert response.get_json()["answer"]["content"] == "[primary] You asked: am I held up?"


def test_the_cap_holds_jointly_across_two_processes_sharing_redis(app_factory, redis_target, servers) -> None:
    primary, _ = servers
    one, two = (app_factory(**provider_overrides(primary, **redis_target.overrides(), AI_TIMEOUT=60.0))
                for _ in range(2))
    api = signed(one, "alice@example.com")
    on_two = Api(two.test_client(), api.token, api.user_id)
    primary.configure(hang_s=HANG)
    held = [*hold_answers(one, api, 2), asking(two, on_two, on_two.new_conversation()["id"], "held by two")]
    with in_flight(primary, held):
        primary.configure(hang_s=0)
        assert slots_in_redis(redis_target, api.user_id) == 3
        assert_refused(api.ask(api.new_conversation()["id"], "through one"))
        assert_refused(on_two.ask(on_two.new_conversation()["id"], "through two"))
    wait_for(lambda: slots_in_redis(redis_target, api.user_id) == 0, "the slots given back in Redis")


def test_with_redis_down_the_cap_holds_in_process_and_nothing_fails(app_factory, own_redis, servers) -> None:
    primary, _ = servers
    url, _start, kill = own_redis
    app = app_factory(**provider_overrides(primary, AI_TIMEOUT=60.0), REDIS_URL=url, REDIS_SOCKET_TIMEOUT=0.2)
    api = signed(app, "alice@example.com")
    conversations = [api.new_conversation()["id"] for _ in range(4)]
    kill()
    primary.configure(hang_s=HANG)
    with in_flight(primary, [asking(app, api, c, f"question {i}") for i, c in enumerate(conversations[:3])]):
        primary.configure(hang_s=0)
        assert_refused(api.ask(conversations[3], "a fourth question"))
    assert api.ask(conversations[3], "now there is room").status_code == 201


def test_a_live_answer_keeps_its_slot_past_its_lease(app_factory, redis_target, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, **redis_target.overrides(), AI_TIMEOUT=60.0),
                      AI_SLOT_LEASE=0.5, AI_MAX_CONCURRENT_PER_USER=1)
    api = signed(app, "alice@example.com")
    primary.configure(hang_s=HANG)
    with in_flight(primary, hold_answers(app, api, 1)):
        primary.configure(hang_s=0)
        time.sleep(2.0)  # four leases: only renewal keeps the slot
        response = api.ask(api.new_conversation()["id"], "is there room?")
        assert response.status_code == 429, response.get_json()
        assert slots_in_redis(redis_target, api.user_id) == 1


HOLDER = """
import sys, time
from config import TestConfig
from luca import create_app
from luca.extensions import slots

url, prefix, user_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = create_app(TestConfig, {"REDIS_URL": url, "REDIS_KEY_PREFIX": prefix, "AI_SLOT_LEASE": 5.0})
held = [slots.of(app).acquire(user_id) for _ in range(3)]
print("held" if all(s is not None and s.shared for s in held) else "not held", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_the_slots_of_a_process_that_died_are_reclaimed_after_their_lease(app_factory, redis_target,
                                                                           servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, **redis_target.overrides()), RATE_LIMITS_ENABLED=False)
    api = signed(app, "alice@example.com")
    conversation = api.new_conversation()["id"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_target.url, redis_target.prefix, str(api.user_id)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to give anything back
        holder.wait()
        holder.stdout.close()
    assert slots_in_redis(redis_target, api.user_id) == 3
    assert_refused(api.ask(conversation, "while its leases last"))
    outcomes: list[int] = []

    def admitted() -> bool:
        outcomes.append(api.ask(conversation, "after its leases").status_code)
        return outcomes[-1] != 429

    wait_for(admitted, "an answer admitted after the dead process's leases", timeout=30)
    assert outcomes[-1] == 201
    assert slots_in_redis(redis_target, api.user_id) == 0


PATHS = ["whole", "streamed", "503", "streamed 503", "dedup hit", "retry", "stream left mid-way",
         "stream never read"]


@pytest.mark.parametrize("path", PATHS)
def test_every_way_an_answer_ends_gives_its_slot_back(app_factory, redis_target, servers, path: str) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, **redis_target.overrides()), AI_MAX_CONCURRENT_PER_USER=1)
    api = signed(app, "alice@example.com")
    conversation = api.new_conversation()["id"]
    url = f"/api/conversations/{conversation}/messages"
    if path in ("503", "streamed 503"):
        primary.configure(status=502)
        assert api.ask(conversation, "no one answers", stream=path == "streamed 503").status_code == 503
        primary.configure(status=None)
    elif path == "dedup hit":
        api.ask(conversation, "the same first question")
        again = api.ask(api.new_conversation()["id"], "the same first question").get_json()
        assert again["answer"]["cached"] is True
    elif path == "retry":
        question = api.ask(conversation, "again please").get_json()["message"]
        assert api.post(f"{url}/{question['id']}/retry", json={"cache": False}).status_code == 201
    elif path in ("stream left mid-way", "stream never read"):
        primary.configure(chunk_delay_ms=50)
        response = api.client.post(url, json={"content": "a long answer", "stream": True},
                                   headers=api.headers(), buffered=False)
        if path == "stream left mid-way":
            assert b"event: start" in next(iter(response.response))
        response.close()
        primary.configure(chunk_delay_ms=0)
    else:
        response = api.ask(conversation, "an answer", stream=path == "streamed")
        assert response.status_code in (200, 201)
        response.get_data()
        response.close()  # what a WSGI server does after the last byte (the test client leaves it to us)
    with app.app_context():
        assert slots.in_use(api.user_id) == 0
    assert slots_in_redis(redis_target, api.user_id) == 0
    assert api.ask(conversation, "is there room again?").status_code == 201


# -- against a real gunicorn --------------------------------------------------------------------


@contextmanager
def luca_under_gunicorn(tmp_path: Path, primary: Any, **settings: str) -> Iterator[tuple[str, str]]:
    """gunicorn on the primary test provider with one user; yields its base URL and the user's token."""
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", **provider_env(primary),
                   RATE_LIMITS_ENABLED="false", **settings)
    flask_command(env, "db", "upgrade")
    token = flask_command(env, "users", "create", "alice@example.com").strip().splitlines()[-1]
    with gunicorn(env) as (base, _process):
        yield base, token


@pytest.mark.slow
def test_healthz_stays_fast_while_one_users_answers_hang(tmp_path: Path, servers) -> None:
    primary, _ = servers
    with luca_under_gunicorn(tmp_path, primary, WEB_CONCURRENCY="1", GUNICORN_THREADS="5") as (base, token):
        conversations = [new_conversation_over_http(base, token) for _ in range(8)]
        primary.configure(hang_s=HANG)
        refusals: list[str] = []

        def ask(conversation: str, stream: bool) -> None:
            path = f"/api/conversations/{conversation}/messages"
            body = {"content": f"hang {conversation}", "stream": stream}  # distinct: no deduplication
            status, _, answer = http_request(base, "POST", path, token, body)
            refusals.append(json.loads(answer)["error"]["code"] if status == 429 else str(status))

        # The attack of the issue: eight answers at once from one user, on a server of five threads.
        threads = [threading.Thread(target=ask, args=(c, i % 2 == 1), daemon=True)
                   for i, c in enumerate(conversations)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(refusals) == 5 and primary.stats()["active"] == 3,
                     "three answers in flight and five refused")
            assert refusals == ["too_many_concurrent_answers"] * 5
            for path in ("/healthz", "/readyz"):
                started = time.monotonic()
                status, _, _ = http_request(base, "GET", path, timeout=10)
                assert status == 200 and time.monotonic() - started < 1.0, path
        finally:
            primary.reset()
            for thread in threads:
                thread.join(30)


def read_event(response: http.client.HTTPResponse) -> bytes:
    """Read a streamed response up to the end of its next event."""
    buffer = b""
    while b"\n\n" not in buffer:
        chunk = response.read1(65536)
        assert chunk, "the stream ended"
        buffer += chunk
    return buffer


@pytest.mark.slow
def test_a_streaming_client_that_disconnects_gives_its_slot_back(tmp_path: Path, redis_target, servers) -> None:
    primary, _ = servers
    primary.configure(answer="word " * 200, chunk_delay_ms=100)  # a streamed answer of 20 s
    settings = {"REDIS_URL": redis_target.url, "REDIS_KEY_PREFIX": redis_target.prefix,
                "QUEUE_PREFIX": redis_target.prefix, "AI_MAX_CONCURRENT_PER_USER": "1"}
    with luca_under_gunicorn(tmp_path, primary, WEB_CONCURRENCY="2", **settings) as (base, token):
        conversation = new_conversation_over_http(base, token)
        path = f"/api/conversations/{conversation}/messages"
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", path, body=json.dumps({"content": "a long answer", "stream": True}),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        assert response.status == 200 and b"event: start" in read_event(response)
        assert http_request(base, "POST", path, token, {"content": "while it streams"})[0] == 429
        conn.close()  # the client goes away mid-answer
        statuses: list[int] = []

        def admitted() -> bool:
            statuses.append(http_request(base, "POST", path, token, {"content": "after it left"})[0])
            return statuses[-1] != 429

        wait_for(admitted, "an answer admitted after the client left", timeout=15)
        assert statuses[-1] == 201
        assert primary.stats()["completed"] == 1  # the answer after; the one left was never finished
