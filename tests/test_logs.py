"""Logging: text and JSON lines, one handler per process, secrets redacted everywhere, request ids."""
from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import pytest
from flask import Flask, g

import luca
from config import TestConfig
from luca import create_app, logs
from luca.logs import RedactSecrets, configure_logging, redact
from tests.support.apps import close_app

# Runs once, on SQLite: log lines do not depend on the database.
pytestmark = pytest.mark.sqlite_only

log = logging.getLogger("luca.test_logs")

TOKEN = "luca_" + "Ab3-x_Yz9Q" * 4 + "k2Z"  # the shape issue_token() makes: luca_ + 43 urlsafe characters
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")

# name: (text containing a secret, the secret, what it must become)
SECRETS = {
    "luca token": (f"signed in with {TOKEN}", TOKEN, "luca_***"),
    "bearer header": ("Authorization: Bearer abc.DEF-123_ghi456", "abc.DEF-123_ghi456", "Authorization: Bearer ***"),
    "basic header": ("Authorization: Basic bHVjYTpodW50ZXIy", "bHVjYTpodW50ZXIy", "Authorization: Basic ***"),
    "postgres url": ("postgres://luca:pgPassw0rd@db:5432/luca", "pgPassw0rd", "postgres://luca:***@db:5432/luca"),
    "psycopg url": ("postgresql+psycopg://luca:pgPassw0rd@db/luca", "pgPassw0rd",
                    "postgresql+psycopg://luca:***@db/luca"),
    "redis url": ("redis://:r3disPass@cache:6379/0", "r3disPass", "redis://:***@cache:6379/0"),
    "rediss url": ("rediss://default:r3disPass@cache.example.com:6380", "r3disPass",
                   "rediss://default:***@cache.example.com:6380"),
    "amqp url": ("amqp://guest:rabbitPass@mq:5672//", "rabbitPass", "amqp://guest:***@mq:5672//"),
    "dsn password": ("host=db user=luca password=dsnPass99 dbname=luca", "dsnPass99", "password=*** dbname=luca"),
    "dsn pwd": ("Server=db;Uid=luca;Pwd=dsnPass99;", "dsnPass99", "Pwd=***;"),
    "openai key": ("key sk-proj-Abcdefghijklmnop1234", "sk-proj-Abcdefghijklmnop1234", "key sk-***"),
    "google key": ("key AIzaSyA1234567890abcdefghijklmnopq", "AIzaSyA1234567890abcdefghijklmnopq", "key AIza***"),
}


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test a fresh installed-handler flag and secret set; undo filters and level changes after."""
    root = logging.getLogger()
    filters = {handler: handler.filters[:] for handler in root.handlers}
    level = root.level
    monkeypatch.setattr(logs, "_handler", None)
    monkeypatch.setattr(logs, "_secret_values", logs._SecretValues())
    yield
    for handler, saved in filters.items():
        handler.filters[:] = saved
    root.setLevel(level)


@pytest.fixture
def luca_owns_root(monkeypatch: pytest.MonkeyPatch) -> Callable[[], AbstractContextManager[None]]:
    """A context manager that empties the root logger (as in a fresh process) so Luca installs its handler.

    Used inside the test body: pytest adds its capture handlers anew for each test phase.
    create_app is pointed at luca.logs.configure_logging, as it will be once wired in.
    """
    monkeypatch.setattr(luca, "configure_logging", configure_logging)

    @contextmanager
    def owned() -> Iterator[None]:
        root = logging.getLogger()
        saved, level = root.handlers[:], root.level
        for handler in saved:
            root.removeHandler(handler)
        try:
            yield
        finally:
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            for handler in saved:
                root.addHandler(handler)
            root.setLevel(level)

    return owned


def bare_app(**config: Any) -> Flask:
    """A plain Flask app with some settings and one route, for what configure_logging does to an app."""
    app = Flask("luca-logs-test")
    app.config.update(config)

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        return {"request_id": g.request_id}

    return app


def redacting(caplog: pytest.LogCaptureFixture, **config: Any) -> Flask:
    """Configure logging for a bare app while caplog's handler is on the root logger; capture DEBUG and up."""
    app = bare_app(**config)
    configure_logging(app)
    caplog.set_level(logging.DEBUG)
    return app


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of text parsed as one JSON object (fails on any other line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- formats ---------------------------------------------------------------------------------

def test_json_format_writes_one_object_per_line_with_extra_fields_and_request_id(
        app_factory: Callable[..., Flask], luca_owns_root: Callable[[], AbstractContextManager[None]],
        capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        app = app_factory(LOG_FORMAT="json")

        @app.get("/test-log")
        def test_log() -> str:
            log.info("hello %s", "world", extra={"user_id": 7, "dsn": "postgres://u:pw123456@h/db"})
            return "ok"

        assert app.test_client().get("/test-log", headers={"X-Request-ID": "req-123"}).status_code == 200
        log.warning("outside a request")
    lines = json_lines(capsys.readouterr().err)

    hello = next(line for line in lines if line["message"] == "hello world")
    assert hello["level"] == "INFO" and hello["logger"] == "luca.test_logs"
    assert hello["time"].endswith("Z") and datetime.fromisoformat(hello["time"]).utcoffset().total_seconds() == 0
    assert hello["user_id"] == 7 and hello["dsn"] == "postgres://u:***@h/db"
    assert hello["request_id"] == "req-123"
    outside = next(line for line in lines if line["message"] == "outside a request")
    assert "request_id" not in outside and outside["level"] == "WARNING"


def test_json_format_puts_the_redacted_traceback_in_exc_info(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app(LOG_FORMAT="json"))
        try:
            raise RuntimeError("cannot reach postgresql+psycopg://luca:hunter2secret@db/luca")
        except RuntimeError:
            log.exception("connect failed")
    [line] = json_lines(capsys.readouterr().err)
    assert line["message"] == "connect failed"
    assert "Traceback" in line["exc_info"] and "RuntimeError" in line["exc_info"]
    assert "luca:***@db" in line["exc_info"] and "hunter2secret" not in line["exc_info"]


def test_json_extra_fields_named_like_lucas_own_are_written_as_extra_fields(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        app = bare_app(LOG_FORMAT="json")
        configure_logging(app)
        extra = {"time": "noon", "level": "high", "logger": "me", "request_id": "forged"}
        log.info("outside", extra=extra)
        with app.test_request_context(headers={"X-Request-ID": "req-9"}):
            log.info("inside", extra=extra)
    outside, inside = json_lines(capsys.readouterr().err)
    assert outside["level"] == "INFO" and outside["logger"] == "luca.test_logs" and outside["time"].endswith("Z")
    assert {k: outside[k] for k in ("extra_time", "extra_level", "extra_logger")} == {
        "extra_time": "noon", "extra_level": "high", "extra_logger": "me"}
    assert outside["request_id"] == "forged"  # outside a request the name is free
    assert inside["request_id"] == "req-9" and inside["extra_request_id"] == "forged"


def test_text_format_is_the_default(luca_owns_root: Callable[[], AbstractContextManager[None]],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app())
        log.info("plain %s", "text")
    [line] = capsys.readouterr().err.splitlines()
    assert TEXT_LINE.match(line).groups() == ("INFO", "luca.test_logs", "plain text")


def test_log_level_comes_from_the_setting(luca_owns_root: Callable[[], AbstractContextManager[None]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app(LOG_LEVEL="warning"))
        log.info("not shown")
        log.warning("shown")
    assert [TEXT_LINE.match(line).group(3) for line in capsys.readouterr().err.splitlines()] == ["shown"]


def test_gunicorn_loggers_get_the_format_and_the_filter(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    manager = logging.Logger.manager
    existed = {name: name in manager.loggerDict for name in ("gunicorn", "gunicorn.access")}
    access = logging.getLogger("gunicorn.access")
    access.propagate = False  # as gunicorn sets it
    handler = logging.StreamHandler()
    access.addHandler(handler)
    try:
        with luca_owns_root():
            configure_logging(bare_app(LOG_FORMAT="json"))
            # gunicorn logs each request as its access_log_format with a dict of atoms.
            access.info('%(h)s "%(r)s" %(s)s', {"h": "10.0.0.1", "r": f"GET /api/me?token={TOKEN} HTTP/1.1", "s": "200"})
    finally:
        access.removeHandler(handler)
        access.propagate = True
        for name, was_there in existed.items():
            if not was_there:
                manager.loggerDict.pop(name, None)
    [line] = json_lines(capsys.readouterr().err)
    assert line["logger"] == "gunicorn.access"
    assert line["message"] == '10.0.0.1 "GET /api/me?token=luca_*** HTTP/1.1" 200'


# --- control characters ----------------------------------------------------------------------

def test_control_characters_in_a_message_are_escaped_onto_one_line(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app())
        log.warning("sign-in by %s", "ops\n2024-01-01 00:00:00,000 INFO luca: forged\r\t\x1b[31m\x85\u2028\x00")
    [line] = capsys.readouterr().err.splitlines()
    assert TEXT_LINE.match(line).group(3) == (
        "sign-in by ops\\n2024-01-01 00:00:00,000 INFO luca: forged\\r\\t\\x1b[31m\\x85\\u2028\\x00")


def test_control_characters_in_extra_fields_are_escaped(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app(LOG_FORMAT="json"))
        log.info("probe", extra={"who": "a\nb", "seen": ["c\rd"]})
    [line] = json_lines(capsys.readouterr().err)
    assert line["who"] == "a\\nb" and line["seen"] == ["c\\rd"]


def test_a_traceback_keeps_its_lines_but_a_message_in_it_cannot_start_one(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        configure_logging(bare_app())
        try:
            raise ValueError("bad name\n2024-01-01 00:00:00,000 INFO luca: forged")
        except ValueError:
            log.exception("request failed")
    first, *rest = capsys.readouterr().err.splitlines()
    assert TEXT_LINE.match(first).group(3) == "request failed"
    assert rest[0] == "  Traceback (most recent call last):" and len(rest) > 2
    assert all(line.startswith("  ") for line in rest)  # nothing but the record's first line starts a line
    assert "  2024-01-01 00:00:00,000 INFO luca: forged" in rest


# --- one handler per process -----------------------------------------------------------------

def test_many_apps_install_one_handler_and_a_message_is_written_once(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    with luca_owns_root():
        for _ in range(3):
            configure_logging(bare_app())
        root_handlers = logging.getLogger().handlers[:]
        log.info("once")
    assert root_handlers == [logs._handler]
    assert root_handlers[0].filters == [logs._redact_filter]
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("luca.test_logs: once")


def test_many_create_app_calls_write_a_message_once(
        luca_owns_root: Callable[[], AbstractContextManager[None]], capsys: pytest.CaptureFixture[str]) -> None:
    apps = []
    try:
        with luca_owns_root():
            for _ in range(3):
                apps.append(create_app(TestConfig))
                configure_logging(apps[-1])
            assert len(logging.getLogger().handlers) == 1
            log.warning("exactly once")
    finally:
        for app in apps:
            close_app(app)
    assert len([line for line in capsys.readouterr().err.splitlines() if "exactly once" in line]) == 1


def test_host_handlers_are_kept_and_get_the_filter_once(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    for _ in range(3):
        configure_logging(bare_app())
    assert root.handlers == before
    assert caplog.handler in root.handlers
    for handler in root.handlers:
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1


# --- redaction -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", SECRETS)
def test_secret_in_the_message_is_redacted(caplog: pytest.LogCaptureFixture, kind: str) -> None:
    text, secret, redacted = SECRETS[kind]
    redacting(caplog)
    log.info(f"connecting: {text}")
    assert secret not in caplog.text
    assert redacted in caplog.text
    assert caplog.records[-1].getMessage() == f"connecting: {redact(text)}"


@pytest.mark.parametrize("kind", SECRETS)
def test_secret_in_the_arguments_is_redacted(caplog: pytest.LogCaptureFixture, kind: str) -> None:
    text, secret, redacted = SECRETS[kind]
    redacting(caplog)
    log.info("url %s", text)
    record = caplog.records[-1]
    assert secret not in caplog.text and secret not in record.getMessage()
    assert redacted in record.getMessage()
    assert record.args is None


@pytest.mark.parametrize("kind", SECRETS)
def test_secret_in_a_traceback_is_redacted(caplog: pytest.LogCaptureFixture, kind: str) -> None:
    text, secret, redacted = SECRETS[kind]
    redacting(caplog)
    try:
        raise ConnectionError(f"could not connect: {text}")
    except ConnectionError:
        log.exception("database error")
    assert "Traceback" in caplog.text and "ConnectionError: could not connect" in caplog.text
    assert secret not in caplog.text
    assert redacted in caplog.text


def test_exception_chained_from_a_dsn_error_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redacting(caplog)
    try:
        try:
            raise OSError("postgresql+psycopg://luca:hunter2secret@127.0.0.1:1/luca refused")
        except OSError as exc:
            raise RuntimeError("database unavailable") from exc
    except RuntimeError:
        log.exception("request failed")
    assert "hunter2secret" not in caplog.text and "luca:***@127.0.0.1" in caplog.text


@pytest.mark.parametrize(("settings", "secret"), [
    ({"SECRET_KEY": "supersecretvalue123"}, "supersecretvalue123"),
    ({"METRICS_TOKEN": "metrics-token-value"}, "metrics-token-value"),
    ({"AI_PROVIDER_SETTINGS": {"acme": {"base_url": "http://acme", "api_key": "acme-provider-key-42",
                                        "model": "m"}}}, "acme-provider-key-42"),
    ({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://luca:dbPassw0rd@db/luca"}, "dbPassw0rd"),
    ({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://luca:p%40ss-word1@db/luca"}, "p@ss-word1"),
    ({"REDIS_URL": "redis://:redisPassw0rd@cache:6379/0"}, "redisPassw0rd"),
    ({"REDIS_CACHE_URL": "rediss://default:cachePassw0rd@cache:6380/1"}, "cachePassw0rd"),
    ({"RATE_LIMIT_STORAGE_URL": "redis://:limitPassw0rd@limits:6379"}, "limitPassw0rd"),
    ({"ALERT_WEBHOOK_URL": "https://alerts:hookPassw0rd@hooks.example.com/luca"}, "hookPassw0rd"),
])
def test_configured_secret_values_are_redacted_anywhere(caplog: pytest.LogCaptureFixture,
                                                        settings: dict[str, Any], secret: str) -> None:
    redacting(caplog, **settings)
    log.warning("the value was %s (%r)", secret, {"value": secret})
    assert secret not in caplog.text
    assert caplog.records[-1].getMessage() == "the value was *** ({'value': '***'})"
    assert redact(f"x{secret}x") == "x***x"


def test_configured_values_shorter_than_six_characters_are_not_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redacting(caplog, SECRET_KEY="short", METRICS_TOKEN="none")
    log.info("a short answer: none")
    assert caplog.records[-1].getMessage() == "a short answer: none"


def test_ordinary_words_are_left_alone() -> None:
    for text in ["Basic auth is off", "risk-management-abcdefghijklmnop", "password authentication failed",
                 "send 'Authorization: Bearer <token>'", "http://localhost:5000/api/me", "tokens_in=12"]:
        assert redact(text) == text


def test_a_log_call_with_bad_arguments_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    redacting(caplog)
    log.info("count %d", f"not a number {TOKEN}")
    assert "unformattable arguments" in caplog.records[-1].getMessage()
    assert TOKEN not in caplog.text


# --- request ids -----------------------------------------------------------------------------

def test_a_request_without_an_id_gets_a_new_one_echoed() -> None:
    app = bare_app()
    configure_logging(app)
    response = app.test_client().get("/ping")
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.get_json() == {"request_id": request_id}


def test_a_sane_incoming_request_id_is_reused() -> None:
    app = bare_app()
    configure_logging(app)
    response = app.test_client().get("/ping", headers={"X-Request-ID": "lb-7f3a.B_9"})
    assert response.headers["X-Request-ID"] == "lb-7f3a.B_9"
    assert response.get_json() == {"request_id": "lb-7f3a.B_9"}


@pytest.mark.parametrize("incoming", ["x" * 65, "has space", "semi;colon", "<script>", "ünïcode", ""])
def test_an_insane_incoming_request_id_is_replaced(incoming: str) -> None:
    app = bare_app()
    configure_logging(app)
    response = app.test_client().get("/ping", headers={"X-Request-ID": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_error_responses_carry_the_request_id() -> None:
    app = bare_app()
    configure_logging(app)
    assert app.test_client().get("/missing", headers={"X-Request-ID": "abc"}).headers["X-Request-ID"] == "abc"


# --- end to end ------------------------------------------------------------------------------

def test_database_down_leaks_neither_password_nor_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://luca:hunter2secret@127.0.0.1:1/luca"})
    configure_logging(app)
    token = "luca_" + secrets.token_urlsafe(32)
    try:
        response = app.test_client().get("/api/me", headers={"Authorization": f"Bearer {token}"})
    finally:
        close_app(app)

    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert "hunter2secret" not in body and token not in body
    assert "database unavailable" in caplog.text
    for text in [caplog.text, *(r.getMessage() for r in caplog.records)]:
        assert "hunter2secret" not in text and token not in text
