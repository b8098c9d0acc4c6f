"""A dead or unreachable PostgreSQL gives fast 503s and opens the `database` breaker."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from config import TestConfig
from luca import create_app
from luca.extensions import breakers
from tests.support.apps import close_app


class Blackhole:
    """A TCP listener that accepts connections and never answers, like a host that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        """Take connections and hold them open, silently."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        """Stop listening and drop every held connection."""
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    """A database address that never answers."""
    hole = Blackhole()
    yield hole
    hole.close()


def app_with_database(url: str) -> Flask:
    """An app on an unreachable database: 1 s connect timeout, breaker opens after 2 failures."""
    return create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url, "DATABASE_CONNECT_TIMEOUT": 1.0,
                                   "DB_BREAKER_FAIL_MAX": 2, "DB_BREAKER_RESET_TIMEOUT": 30})


def test_an_unreachable_database_answers_503_within_the_connect_timeout(blackhole: Blackhole) -> None:
    app = app_with_database(f"postgresql+psycopg://127.0.0.1:{blackhole.port}/luca")
    client = app.test_client()
    try:
        started = time.monotonic()
        response = client.get("/api/me", headers={"Authorization": "Bearer luca_anything"})
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert response.headers["Retry-After"]
        assert elapsed < 1.0 + 1.5  # the connect timeout plus generous slack, never a hung worker
    finally:
        close_app(app)


def test_the_database_breaker_opens_and_then_fails_fast_without_connecting(blackhole: Blackhole) -> None:
    app = app_with_database(f"postgresql+psycopg://127.0.0.1:{blackhole.port}/luca")
    client = app.test_client()
    try:
        for _ in range(2):
            assert client.get("/api/conversations", headers={"Authorization": "Bearer x"}).status_code == 503
        assert breakers.of(app).database.current_state == "open"
        attempts = len(blackhole.accepted)
        response = client.get("/api/conversations", headers={"Authorization": "Bearer x"})
        assert response.status_code == 503
        assert 20 <= int(response.headers["Retry-After"]) <= 30
        assert len(blackhole.accepted) == attempts  # no new connection attempt while open
    finally:
        close_app(app)


def test_a_stopped_database_answers_503_at_once() -> None:
    with socket.socket() as probe:  # a port where nothing listens: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = app_with_database(f"postgresql+psycopg://127.0.0.1:{port}/luca")
    try:
        response = app.test_client().get("/api/me", headers={"Authorization": "Bearer x"})
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
    finally:
        close_app(app)
