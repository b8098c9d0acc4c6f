"""Luca's logging: one stderr handler, text or JSON lines, secrets redacted, request ids.

configure_logging(app) is called by create_app once for every app; what it sets up for the whole
process (the handler, the filters) is set up once, however many apps a process builds.

- The root logger gets one handler writing to stderr, installed once per process. When the
  host (gunicorn --log-config, pytest) already put handlers on the root logger, those are
  kept and Luca adds none; LOG_FORMAT and LOG_LEVEL then apply only to gunicorn's loggers.
- LOG_FORMAT=text (default) writes "time LEVEL logger: message"; LOG_FORMAT=json writes one
  JSON object per line (python-json-logger's formatter): time, level, logger, message, exc_info,
  request_id and extra fields.
- RedactSecrets, on every handler Luca configures and on the root logger's existing
  handlers, rewrites each record so that API tokens, Authorization values, passwords in
  URLs and DSNs, provider keys and the app's configured secret values never reach a line,
  and so that no value a client sent can start a line: control characters in the message
  and the extra fields are written as escapes (a newline as \\n), and every line of a
  traceback is indented (a log line never starts with a space). gunicorn's access log goes
  through the same filter.
- Every request gets an id (a sane incoming X-Request-ID, else a new one) in g.request_id,
  echoed in the X-Request-ID response header and added to JSON log lines.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, g, has_request_context, request
from flask.wrappers import Response
from pythonjsonlogger import json as jsonlogger

log = logging.getLogger(__name__)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")
# Settings whose URL may carry a password.
URL_SETTINGS = ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "REDIS_CACHE_URL", "RATE_LIMIT_STORAGE_URL",
                "ALERT_WEBHOOK_URL")
# Shorter configured values are not redacted: they would hide everyday words.
MIN_SECRET_LENGTH = 6
MASK = "***"

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_REDACTED_MARK = "_luca_redacted"
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# scheme://user:password@host -> scheme://user:***@host (to the last "@" before a space or quote).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/?#@'\"]*:)[^\s'\"]*@")
# password=..., pwd=..., "api_key": "..." in DSNs, query strings, dicts and JSON.
_KEY_VALUE = re.compile(
    r"(?i)(?<![a-z])(password|passwd|pwd|secret(?:[_-]?key)?|api[_-]?key|(?:access|auth)[_-]?token)"
    r"(['\"]?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s'\"&;,)}\]]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(r"(?i)\b(basic)\s+([A-Za-z0-9+/]+={0,2})(?![A-Za-z0-9+/=])")
_TOKENS = (
    (re.compile(r"(?<![A-Za-z0-9])luca_[A-Za-z0-9_-]{20,}"), "luca_" + MASK),
    (re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}"), "sk-" + MASK),
    (re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{20,}"), "AIza" + MASK),
)


class _SecretValues:
    """The configured secret values of every app in the process, matched literally, longest first."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        """Remember values (those of at least MIN_SECRET_LENGTH characters)."""
        with self._lock:
            new = {v for v in values if len(v.strip()) >= MIN_SECRET_LENGTH} - self._values
            if new:
                self._values |= new
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def sub(self, text: str) -> str:
        """Replace every known value in text with the mask."""
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


_secret_values = _SecretValues()
_handler: logging.Handler | None = None  # the root handler Luca installed, once per process
_gunicorn_formatter: logging.Formatter | None = None  # the format the last configured app chose


def _redact_basic(match: re.Match[str]) -> str:
    """Mask Basic credentials: in an Authorization header, or when the value decodes to user:password."""
    before = match.string[max(0, match.start() - 32):match.start()].lower()
    try:
        credentials = b":" in base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        credentials = False
    return f"{match.group(1)} {MASK}" if credentials or "authorization" in before else match.group(0)


def redact(text: str) -> str:
    """Return text with tokens, keys, credentials and configured secret values masked."""
    text = _secret_values.sub(text)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _KEY_VALUE.sub(rf"\1\2{MASK}", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _BASIC.sub(_redact_basic, text)
    for pattern, replacement in _TOKENS:
        text = pattern.sub(replacement, text)
    return text


def register_secrets(*values: Any) -> None:
    """Add literal secret values (str or bytes; None and short values are ignored) to what redact() masks."""
    texts = (v.decode("utf-8", "ignore") if isinstance(v, bytes) else v for v in values)
    _secret_values.add(t for t in texts if isinstance(t, str))


def _url_password(url: Any) -> str | None:
    """The password in a URL string or SQLAlchemy URL, if any."""
    if url is None:
        return None
    if not isinstance(url, str):
        return getattr(url, "password", None)
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def configured_secrets(config: Mapping[str, Any]) -> Iterator[Any]:
    """The secret values in an app's config: keys, tokens, API keys and URL passwords."""
    yield config.get("SECRET_KEY")
    yield config.get("METRICS_TOKEN")
    for settings in (config.get("AI_PROVIDER_SETTINGS") or {}).values():
        yield settings.get("api_key")
    for name in URL_SETTINGS:
        password = _url_password(config.get(name))
        if password:
            yield password
            yield unquote(password)


_plain_formatter = logging.Formatter()

# C0 controls, DEL, C1 controls and Unicode's line and paragraph separators, as escapes.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def escape_controls(text: str) -> str:
    """text with its control characters written as escapes (\\n, \\r, \\t, \\x1b, ...), so it stays on one line."""
    return text.translate(_CONTROL_ESCAPES)


def indent_lines(text: str) -> str:
    """A multi-line text (a traceback) on its own lines, each indented, control characters otherwise escaped."""
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


def redact_record(record: logging.LogRecord) -> None:
    """Redact and escape a record in place, once: its message (args merged in), exception text and stack."""
    if getattr(record, _REDACTED_MARK, False):
        return
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not break the log call
        message = f"{record.msg!s} (unformattable arguments: {record.args!r})"
    record.msg, record.args = escape_controls(redact(message)), None
    if record.exc_info and not record.exc_text:
        try:
            record.exc_text = _plain_formatter.formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - nor may an exception that cannot be printed
            record.exc_text = f"{record.exc_info[0]!r} (traceback could not be formatted)"
    if record.exc_text:
        record.exc_text = indent_lines(redact(record.exc_text))
    if record.stack_info:
        record.stack_info = indent_lines(redact(record.stack_info))
    setattr(record, _REDACTED_MARK, True)


class RedactSecrets(logging.Filter):
    """A handler filter that redacts every record before it is formatted; it never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact record in place and let it through."""
        redact_record(record)
        return True


class TextFormatter(logging.Formatter):
    """Plain lines: time LEVEL logger: message (redacted even without the filter)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """Format a redacted record."""
        redact_record(record)
        return super().format(record)


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy of an extra field's value, with strings redacted and escaped like the message."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return escape_controls(redact(value))
    if isinstance(value, Mapping):
        return {escape_controls(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return escape_controls(redact(str(value)))


def current_request_id() -> str | None:
    """The id of the request being served (assigned on first use), or None outside a request."""
    if not has_request_context():
        return None
    if "request_id" not in g:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = supplied if _SANE_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    return g.request_id


# Luca's own fields of a JSON line; an extra field of the same name is written as extra_<name>
# (through rename_fields, and for request_id, which only a request has, in add_fields).
_JSON_FIELDS = ("time", "level", "logger", "message", "exc_info", "stack_info", "request_id")


class JsonFormatter(jsonlogger.JsonFormatter):
    """One JSON object per line: time, level, logger, message, exc_info, request_id, extra fields.

    python-json-logger gathers the fields and the extra ones; Luca's part is the redaction
    and escaping (redact_record, _jsonable), the UTC time and the request id.
    """

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           **{name: f"extra_{name}" for name in ("time", "level", "logger")}},
            reserved_attrs=sorted(_STANDARD_ATTRIBUTES), json_default=str)

    def format(self, record: logging.LogRecord) -> str:
        """Format a redacted record as a JSON line."""
        redact_record(record)
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time in UTC, to the millisecond: 2024-05-01T12:00:00.123Z."""
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def formatException(self, ei: Any) -> str:
        """Nothing: redact_record already wrote the redacted traceback to exc_text, which the base class takes."""
        return ""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        """Luca's fields, then the extra ones (redacted and escaped like the message), then the request id."""
        super().add_fields(log_data, record, message_dict)
        for key, value in log_data.items():
            if key not in _JSON_FIELDS:
                log_data[key] = _jsonable(value)
        request_id = current_request_id()
        if request_id is not None:
            if "request_id" in log_data:
                log_data["extra_request_id"] = log_data.pop("request_id")
            log_data["request_id"] = request_id


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record is emitted (so swapped streams are followed)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        """The current sys.stderr."""
        return sys.stderr


_redact_filter = RedactSecrets()


def _add_redaction(handler: logging.Handler) -> None:
    """Attach the redaction filter to handler unless it already has one."""
    if not any(isinstance(f, RedactSecrets) for f in handler.filters):
        handler.addFilter(_redact_filter)


def _level(value: Any) -> int | None:
    """A log level from a name ("debug", "INFO") or a number; None when it is neither."""
    if isinstance(value, int):
        return value
    return logging.getLevelNamesMapping().get(str(value).strip().upper())


def _add_request_ids(app: Flask) -> None:
    """Give every request of app an id and echo it in the X-Request-ID header."""

    @app.before_request
    def assign_request_id() -> None:
        current_request_id()

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = current_request_id() or uuid.uuid4().hex
        return response


def guard_gunicorn_logs() -> None:
    """Put the redaction filter, and Luca's format once an app chose it, on gunicorn's handlers.

    configure_logging() calls it; so does gunicorn.conf.py's logger class after every setup,
    since gunicorn replaces its handlers when it reloads its configuration (HUP).
    """
    for name in GUNICORN_LOGGERS:
        logger = logging.Logger.manager.loggerDict.get(name)
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if _gunicorn_formatter is not None:
                    handler.setFormatter(_gunicorn_formatter)
                _add_redaction(handler)


def configure_logging(app: Flask) -> None:
    """Set up logging for app: the stderr handler, format, level and redaction (once a process), request ids."""
    global _handler, _gunicorn_formatter
    register_secrets(*configured_secrets(app.config))
    log_format = str(app.config.get("LOG_FORMAT") or "text").strip().lower()
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    level = _level(app.config.get("LOG_LEVEL") or "INFO")

    root = logging.getLogger()
    if not root.handlers:
        _handler = StderrHandler()
        root.addHandler(_handler)
    if _handler is not None and _handler in root.handlers:
        _handler.setFormatter(formatter)
        root.setLevel(level if level is not None else logging.INFO)
    for handler in root.handlers:
        _add_redaction(handler)
    _gunicorn_formatter = formatter
    guard_gunicorn_logs()

    _add_request_ids(app)
    if log_format not in {"text", "json"}:
        log.warning("LOG_FORMAT %r is neither text nor json; writing text", app.config.get("LOG_FORMAT"))
    if level is None:
        log.warning("LOG_LEVEL %r is not a level name; using INFO", app.config.get("LOG_LEVEL"))
