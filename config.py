"""Luca's configuration, read from the environment once at start-up."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    """Read a float environment variable."""
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def normalise_database_url(url: str | None) -> str | None:
    """Map Heroku's postgres:// and plain postgresql:// URLs to the psycopg 3 driver."""
    if not url:
        return None
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url() -> str:
    """Return the embedded default database: a SQLite file in instance/."""
    instance = BASE_DIR / "instance"
    instance.mkdir(exist_ok=True)
    return f"sqlite:///{instance / 'luca.db'}"


# Providers spoken to through their OpenAI-compatible endpoints: base URL and model defaults.
KNOWN_PROVIDERS = {
    "openai": ("https://api.openai.com/v1", "gpt-4o-mini"),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.0-flash"),
    "anthropic": ("https://api.anthropic.com/v1/", "claude-3-5-haiku-latest"),
}


def provider_order(value: str) -> list[str]:
    """AI_PROVIDERS as a list; unset means every known provider with a key, then offline."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if names:
        return names
    keyed = [name for name in KNOWN_PROVIDERS if os.environ.get(f"{name.upper()}_API_KEY")]
    return [*keyed, "offline"]


def provider_settings(names: list[str]) -> dict[str, dict[str, str]]:
    """Base URL, key and model of each OpenAI-compatible provider, from <NAME>_BASE_URL, _API_KEY, _MODEL."""
    settings = {}
    for name in names:
        if name == "offline":
            continue
        base_url, model = KNOWN_PROVIDERS.get(name, ("", ""))
        prefix = name.upper().replace("-", "_")
        settings[name] = {
            "base_url": os.environ.get(f"{prefix}_BASE_URL", base_url),
            # Local servers such as Ollama or vLLM accept any key.
            "api_key": os.environ.get(f"{prefix}_API_KEY", "" if name in KNOWN_PROVIDERS else "none"),
            "model": os.environ.get(f"{prefix}_MODEL", model),
        }
    return settings


class Config:
    """Settings from the environment; see the README's table for each one."""

    SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_hex(32)

    SQLALCHEMY_DATABASE_URI = normalise_database_url(os.environ.get("DATABASE_URL")) or sqlite_url()
    DATABASE_CONNECT_TIMEOUT = env_float("DATABASE_CONNECT_TIMEOUT", 3.0)
    DATABASE_STATEMENT_TIMEOUT_MS = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 5000)
    # One pooled connection per gunicorn thread: a smaller pool opens and closes an overflow
    # connection (a new PostgreSQL backend) for every request beyond it under load.
    DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", env_int("GUNICORN_THREADS", 32))  # gunicorn.conf.py's default
    DATABASE_PING_AFTER = env_float("DATABASE_PING_AFTER", 10.0)

    REDIS_URL = os.environ.get("REDIS_URL") or None
    REDIS_MAX_RETRIES = env_int("REDIS_MAX_RETRIES", 2)
    REDIS_RETRY_DELAY = env_float("REDIS_RETRY_DELAY", 0.05)
    REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5)

    DISABLE_QUEUES = env_bool("DISABLE_QUEUES")
    DISABLE_CACHE = env_bool("DISABLE_CACHE")

    REDIS_CACHE_URL = os.environ.get("REDIS_CACHE_URL") or None
    CACHE_TTL = env_int("CACHE_TTL", 300)
    CACHE_FALLBACK_TTL = env_int("CACHE_FALLBACK_TTL", 30)
    CACHE_NEAR_TTL = env_int("CACHE_NEAR_TTL", 5)
    CACHE_STALE_TTL = env_int("CACHE_STALE_TTL", 24 * 3600)
    CACHE_MEMORY_ITEMS = env_int("CACHE_MEMORY_ITEMS", 10_000)
    AI_DEDUP_TTL = env_int("AI_DEDUP_TTL", 24 * 3600)
    AI_DEDUP_WAIT = env_float("AI_DEDUP_WAIT", 30.0)

    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 10 * 1024 * 1024)
    MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 20_000)
    MAX_TITLE_CHARS = 200
    MAX_METADATA_BYTES = env_int("MAX_METADATA_BYTES", 16 * 1024)
    MAX_METADATA_DEPTH = env_int("MAX_METADATA_DEPTH", 32)

    REDIS_TLS_VERIFY = env_bool("REDIS_TLS_VERIFY")
    # Every key Luca writes (cache, breakers, locks) starts with this; RQ keeps its own rq: keys.
    REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "luca:")

    AI_PROVIDERS = provider_order(os.environ.get("AI_PROVIDERS", ""))
    AI_PROVIDER_SETTINGS = provider_settings(AI_PROVIDERS)
    AI_SYSTEM_PROMPT = os.environ.get("AI_SYSTEM_PROMPT") or None
    AI_TIMEOUT = env_float("AI_TIMEOUT", 60.0)
    AI_CONNECT_TIMEOUT = env_float("AI_CONNECT_TIMEOUT", 5.0)
    AI_CONTEXT_TOKENS = env_int("AI_CONTEXT_TOKENS", 3000)
    AI_CONTEXT_MESSAGES = env_int("AI_CONTEXT_MESSAGES", 40)
    AI_MAX_OUTPUT_TOKENS = env_int("AI_MAX_OUTPUT_TOKENS", 1024)
    # Answers in flight per user (0: no cap), and the lease a slot holds in Redis between renewals.
    AI_MAX_CONCURRENT_PER_USER = env_int("AI_MAX_CONCURRENT_PER_USER", 3)
    AI_SLOT_LEASE = env_float("AI_SLOT_LEASE", 30.0)

    AI_FILE_CONTEXT_TOKENS = env_int("AI_FILE_CONTEXT_TOKENS", 3000)
    AI_PRICES = json.loads(os.environ.get("AI_PRICES") or "{}")
    # How long a budget reservation outlives a process that died holding it (luca/budgets.py).
    BUDGET_RESERVATION_SECONDS = env_float("BUDGET_RESERVATION_SECONDS", 300.0)

    # Background jobs (RQ): queue names get QUEUE_PREFIX; attempts and timeouts per queue.
    QUEUE_PREFIX = os.environ.get("QUEUE_PREFIX", "")
    JOBS_THREADS = env_int("JOBS_THREADS", 2)
    JOBS_RETRY_BACKOFF = env_float("JOBS_RETRY_BACKOFF", 5.0)
    JOBS_RECONCILE_INTERVAL = env_float("JOBS_RECONCILE_INTERVAL", 60.0)
    JOBS_RECONCILE_GRACE = env_float("JOBS_RECONCILE_GRACE", 60.0)
    JOBS_OUTBOX_INTERVAL = env_float("JOBS_OUTBOX_INTERVAL", 5.0)
    JOBS_STALE_AFTER = env_float("JOBS_STALE_AFTER", 180.0)
    TITLE_JOB_TIMEOUT = env_int("TITLE_JOB_TIMEOUT", 120)
    FILE_JOB_TIMEOUT = env_int("FILE_JOB_TIMEOUT", 60)
    ANALYTICS_JOB_TIMEOUT = env_int("ANALYTICS_JOB_TIMEOUT", 300)

    FILE_MAX_BYTES = env_int("FILE_MAX_BYTES", 8 * 1024 * 1024)
    FILE_MAX_PAGES = env_int("FILE_MAX_PAGES", 200)
    FILE_MAX_UNCOMPRESSED_BYTES = env_int("FILE_MAX_UNCOMPRESSED_BYTES", 50 * 1024 * 1024)
    FILE_MAX_CHARS = env_int("FILE_MAX_CHARS", 200_000)
    # Each document is read in a child process with these limits (luca/sandbox.py).
    DOCUMENT_MEMORY_MB = env_int("DOCUMENT_MEMORY_MB", 256)
    DOCUMENT_CPU_SECONDS = env_int("DOCUMENT_CPU_SECONDS", 20)

    # Single sign-on with OpenID Connect: on when OIDC_ISSUER is set (the sign-in page then shows "Sign in with OIDC_NAME").
    OIDC_ISSUER = os.environ.get("OIDC_ISSUER") or None
    OIDC_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "")
    OIDC_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "")
    OIDC_NAME = os.environ.get("OIDC_NAME") or "single sign-on"

    # How many proxies in front set X-Forwarded-For, -Proto and -Host (Render's or Heroku's router: 1).
    TRUSTED_PROXY_HOPS = env_int("TRUSTED_PROXY_HOPS", 0)

    # Operations: logs, metrics, rate limits, alerts.
    LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    RATE_LIMITS_ENABLED = env_bool("RATE_LIMITS_ENABLED", True)
    RATE_LIMIT_STORAGE_URL = os.environ.get("RATE_LIMIT_STORAGE_URL") or None
    RATE_LIMIT_MESSAGES = os.environ.get("RATE_LIMIT_MESSAGES", "20 per minute")
    RATE_LIMIT_UPLOADS = os.environ.get("RATE_LIMIT_UPLOADS", "20 per hour")
    RATE_LIMIT_AUTH_FAILURES = os.environ.get("RATE_LIMIT_AUTH_FAILURES", "10 per 15 minutes")
    ALERT_WEBHOOK_URL = os.environ.get("ALERT_WEBHOOK_URL") or None
    ALERT_WEBHOOK_TIMEOUT = env_float("ALERT_WEBHOOK_TIMEOUT", 5.0)
    ALERT_CHECK_INTERVAL = env_float("ALERT_CHECK_INTERVAL", 30.0)
    ALERT_REDIS_FAILURES = env_int("ALERT_REDIS_FAILURES", 1)
    ALERT_JOB_FAILURE_RATE = env_float("ALERT_JOB_FAILURE_RATE", 0.05)
    ALERT_CACHE_HIT_RATE = env_float("ALERT_CACHE_HIT_RATE", 0.40)
    ALERT_MIN_SAMPLES = env_int("ALERT_MIN_SAMPLES", 20)

    # Accounts (luca/accounts/): who may sign up, the session cookie, mail for reset links, login throttling.
    SIGNUP = os.environ.get("SIGNUP", "invite").strip().lower()  # open: anyone; invite: only by invitation
    PASSWORD_MIN_LENGTH = env_int("PASSWORD_MIN_LENGTH", 12)
    SESSION_COOKIE = os.environ.get("SESSION_COOKIE", "luca_session")
    SESSION_LIFETIME_HOURS = env_int("SESSION_LIFETIME_HOURS", 14 * 24)
    INVITATION_LIFETIME_HOURS = env_int("INVITATION_LIFETIME_HOURS", 7 * 24)
    RESET_LIFETIME_MINUTES = env_int("RESET_LIFETIME_MINUTES", 60)
    # Where links in mail and CLI output point; unset: the address the request came to (localhost for the CLI).
    PUBLIC_URL = os.environ.get("PUBLIC_URL") or None
    MAIL_URL = os.environ.get("MAIL_URL") or None  # smtp://user:pass@host:port or smtps://...
    MAIL_FROM = os.environ.get("MAIL_FROM", "luca@localhost")
    # Failed sign-ins per account (the address's budget is RATE_LIMIT_AUTH_FAILURES).
    RATE_LIMIT_LOGIN_FAILURES = os.environ.get("RATE_LIMIT_LOGIN_FAILURES", "5 per 15 minutes")

    AI_BREAKER_FAIL_MAX = env_int("AI_BREAKER_FAIL_MAX", 5)
    AI_BREAKER_RESET_TIMEOUT = env_float("AI_BREAKER_RESET_TIMEOUT", 60.0)
    AI_BREAKER_SHARED_READ = env_float("AI_BREAKER_SHARED_READ", 1.0)
    DB_BREAKER_FAIL_MAX = env_int("DB_BREAKER_FAIL_MAX", 3)
    DB_BREAKER_RESET_TIMEOUT = env_float("DB_BREAKER_RESET_TIMEOUT", 10.0)
    EXTERNAL_BREAKER_FAIL_MAX = env_int("EXTERNAL_BREAKER_FAIL_MAX", 3)
    EXTERNAL_BREAKER_RESET_TIMEOUT = env_float("EXTERNAL_BREAKER_RESET_TIMEOUT", 30.0)
    REDIS_BREAKER_FAIL_MAX = env_int("REDIS_BREAKER_FAIL_MAX", 2)
    REDIS_BREAKER_RESET_TIMEOUT = env_float("REDIS_BREAKER_RESET_TIMEOUT", 5.0)


class TestConfig(Config):
    """Settings for the test suite: its own database, never the developer's."""

    TESTING = True
    SECRET_KEY = "test-secret"
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    REDIS_URL = None
