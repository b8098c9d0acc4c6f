"""What a send costs outside its provider call, counted: SQL statements, Redis commands and round trips.

The bounds are today's counts as docs/BENCHMARKS.md states them ("The send path"): a change that
adds a statement or a round trip to a send fails here, and one that removes some lowers the bound.
Also: the first request after create_app builds no provider client (they are built in create_app).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from redis.connection import Connection

from luca.ai.providers import OpenAICompatibleProvider
from luca import warm_up
from luca.extensions import redis_gateway
from tests.support.api import Api, signed
from tests.support.apps import count_statements, engine_listener, provider_overrides

# A follow-up send ("cache": false) in a conversation that has a title, with Redis: the conversation
# and its history in one SELECT, the question INSERT with the conversation's updated_at UPDATE (one
# statement on PostgreSQL, two on SQLite, which has no data-modifying CTE), committed before the
# provider call; the answer INSERT, durable before the response: on PostgreSQL a transaction of its
# own in autocommit (no BEGIN, no COMMIT: 5 round trips to the server in all), on SQLite committed.
# Redis: the rate limit's script, the answer-slot script, the user's cache version bumped twice
# (question, answer), the slot released: the answer's bump and the release in one pipeline, so five
# commands in four round trips. The token and the member's and organisation's budgets are read from
# the process's near copy (kept when they were first read from the database).
SEND_STATEMENTS = {"postgresql": 3, "sqlite": 4}
SEND_COMMITS = {"postgresql": 1, "sqlite": 2}  # COMMITs sent; PostgreSQL's answer INSERT commits itself
SEND_REDIS_COMMANDS = 5
SEND_REDIS_ROUND_TRIPS = 4


@dataclass
class RedisCount:
    """Commands and round trips (writes to the socket) this thread sent to Redis while counting."""

    thread: int
    active: bool = False
    commands: list[str] = field(default_factory=list)
    round_trips: int = 0
    connections: int = 0  # opened, by any thread, counting or not

    @contextmanager
    def counting(self) -> Iterator[RedisCount]:
        """Count inside the block (connections are already open, so no handshake is counted)."""
        self.commands, self.round_trips, self.active = [], 0, True
        try:
            yield self
        finally:
            self.active = False


def count_redis(app: Flask) -> RedisCount:
    """Make every connection of the app's Redis clients a counting one; call before the app's first request."""
    count = RedisCount(threading.get_ident())

    class Counting(Connection):
        def counts(self) -> bool:
            return count.active and threading.get_ident() == count.thread

        def connect(self) -> None:
            if self._sock is None:  # redis-py calls connect() on every checkout; it opens only when closed
                count.connections += 1
            super().connect()

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if self.counts():
                count.round_trips += 1
            super().send_packed_command(command, check_health)

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            if self.counts():
                count.commands.append(" ".join(str(a) for a in args[:2]))
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Any) -> list[bytes]:
            if self.counts():
                count.commands += [" ".join(str(a) for a in command[:2]) for command in commands]
            return super().pack_commands(commands)

    for guarded in redis_gateway.of(app)._clients.values():
        pool = guarded.raw.connection_pool
        pool.disconnect()
        pool.reset()
        pool.connection_class = Counting
    return count


@pytest.fixture
def send_app(app_factory, redis_target, servers) -> Flask:
    """Production's shape: Redis for cache, queues, slots and breakers; the fake provider answering."""
    primary, _ = servers
    return app_factory(**provider_overrides(primary, **redis_target.overrides()))


def follow_up(api: Api) -> str:
    """A conversation with a title and one exchange already, ready for the send that is counted."""
    conversation = api.new_conversation(title="Counted")
    assert api.ask(conversation["id"], "first question", cache=False).status_code == 201
    return conversation["id"]


@contextmanager
def count_commits(app: Flask) -> Iterator[list[int]]:
    """Count the transactions the app's engine commits inside the block, in this thread."""
    commits: list[int] = []
    me = threading.get_ident()

    def record(conn: Any) -> None:
        if threading.get_ident() == me:
            commits.append(1)

    with engine_listener(app, "commit", record):
        yield commits


def test_a_send_makes_at_most_the_stated_statements_and_commits(send_app, database_url) -> None:
    api = signed(send_app)
    conversation_id = follow_up(api)
    with count_statements(send_app) as statements, count_commits(send_app) as commits:
        response = api.ask(conversation_id, "a question never asked before", cache=False)
    assert response.status_code == 201
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert len(statements) <= SEND_STATEMENTS[dialect], statements
    assert len(commits) <= SEND_COMMITS[dialect]


def test_a_send_makes_at_most_the_stated_redis_commands_and_round_trips(send_app) -> None:
    redis = count_redis(send_app)
    api = signed(send_app)
    conversation_id = follow_up(api)
    with redis.counting():
        response = api.ask(conversation_id, "a question never asked before", cache=False)
    assert response.status_code == 201
    assert len(redis.commands) <= SEND_REDIS_COMMANDS, redis.commands
    assert redis.round_trips <= SEND_REDIS_ROUND_TRIPS, redis.commands


@pytest.mark.sqlite_only
def test_the_first_request_after_create_app_builds_no_provider_client(app_factory, servers, monkeypatch) -> None:
    built: list[str] = []
    real_init = OpenAICompatibleProvider.__init__

    def counted(self: OpenAICompatibleProvider, name: str, **settings: Any) -> None:
        built.append(name)
        real_init(self, name, **settings)

    monkeypatch.setattr(OpenAICompatibleProvider, "__init__", counted)
    primary, _ = servers
    app = app_factory(**provider_overrides(primary))
    assert built == ["primary"]  # built in create_app ...
    api = signed(app)
    conversation = api.new_conversation(title="First")
    assert api.ask(conversation["id"], "the first question", cache=False).status_code == 201
    assert built == ["primary"]  # ... and not again by the first answer


def test_after_warm_up_a_worker_s_first_send_opens_no_connection(app_factory, redis_target, servers) -> None:
    settings = provider_overrides(servers[0], **redis_target.overrides())
    api = signed(app_factory(**settings))
    conversation = api.new_conversation(title="Warm")
    worker = app_factory(**settings)  # a worker just forked: nothing of its own opened yet
    redis = count_redis(worker)
    database: list[int] = []
    with engine_listener(worker, "connect", lambda *_: database.append(1)):
        warm_up(worker)
        assert database and redis.connections  # warm_up opened them ...
        database.clear()
        redis.connections = 0
        response = Api(worker.test_client(), api.token, api.user_id).ask(conversation["id"], "first", cache=False)
    assert response.status_code == 201
    assert (len(database), redis.connections) == (0, 0)  # ... so the first send opens none
