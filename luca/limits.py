"""Rate limits (Flask-Limiter and limits): messages and uploads per user, failed authentication per client address.

Budgets (config.py):
- RATE_LIMIT_MESSAGES, per signed-in user, shared by sending a message and retrying an answer;
- RATE_LIMIT_UPLOADS, per signed-in user, for uploading documents (every call of these counts,
  also one refused afterwards with 4xx or 503);
- RATE_LIMIT_AUTH_FAILURES, per client address: only credentials that were sent and found wrong
  (a wrong or revoked bearer token on the API, wrong Basic credentials on any path and method
  under /admin/rq) use it up, and only they are refused once it is used up — 429 instead of 401.
  The check and the count happen in refuse_credentials(), where the credentials are found
  wrong, so a request with valid credentials is never refused by it, whoever failed before it
  from the same address (behind a router that may be every user). Missing credentials are no
  attempt and cost nothing. Tokens are 256-bit random, so the budget does not protect them from
  guessing; it makes a client that keeps failing back off.

The client address is request.remote_addr: the socket's peer, or with TRUSTED_PROXY_HOPS the
address werkzeug's ProxyFix took from X-Forwarded-For (see create_app).

Nothing else is limited: Flask-Limiter looks only at views decorated with @rate_limit.

One Limiter per app (AppLimits, the app's `limits` extension): a Limiter keeps one storage, one
strategy and one `enabled` flag, and init_app() on a second app replaces them, so a module-level
Limiter would make every app in a process share the last app's counters. The views carry
module-level `@rate_limit(budget)` decorators that find the current app's Limiter per request.

Storage: Redis at RATE_LIMIT_STORAGE_URL, else REDIS_URL (keys under `<REDIS_KEY_PREFIX>limits:`),
through the Redis gateway's fast-fail client and the `redis` breaker; "memory://" without Redis. When
Redis fails, Flask-Limiter switches to an in-memory copy of the same limits (counted per process,
from zero) and pings Redis now and then to switch back; the ping is skipped while the breaker is
open, so a dead Redis costs a request at most two REDIS_SOCKET_TIMEOUTs, now and then. The
failed-authentication budget uses the same storage through limits' fixed-window strategy, and
process memory for each failure Redis does not take.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter

from luca.errors import APIError, error_response
from luca.extensions import limits, redis_gateway
from luca.redis import REDIS_ERRORS, GuardedRedis

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# The setting that holds each per-user budget, and the message a client gets when it is used up.
BUDGETS = {
    "messages": ("RATE_LIMIT_MESSAGES", "too many messages"),
    "uploads": ("RATE_LIMIT_UPLOADS", "too many uploads"),
}
AUTH_FAILURES_SCOPE = "auth-failures"
AUTH_FAILURES_MESSAGE = "too many failed authentication attempts from this address"
REDIS_SCHEMES = ("redis", "rediss", "unix")  # the schemes redis.from_url() takes


class GatewayStorage(RedisStorage):
    """limits' Redis storage on a client of the Redis gateway: its commands and scripts pass the `redis` breaker."""

    STORAGE_SCHEME = [f"luca+{scheme}" for scheme in REDIS_SCHEMES]  # noqa: RUF012  (read by limits' registry)

    def __init__(self, uri: str, client: GuardedRedis, **options: Any) -> None:
        self.client = client  # before super().__init__(), which registers the scripts through it
        super().__init__(uri.removeprefix("luca+"), connection_pool=client.raw.connection_pool, **options)

    def get_connection(self, readonly: bool = False) -> Any:
        """The guarded client (limits asks for it on every command)."""
        return self.client

    def check(self) -> bool:
        """Whether Redis answers a ping; False without asking while the breaker is open."""
        return self.client.available() and super().check()


def client_address() -> str:
    """The client's address: the socket's peer, or with TRUSTED_PROXY_HOPS the one ProxyFix found."""
    return request.remote_addr or "unknown"


def user_key() -> str:
    """The signed-in user (require_user runs before the view, and so before these limits)."""
    user = g.get("user")
    return f"user:{user.id}" if user is not None else f"address:{client_address()}"


def unlimited_request() -> bool:
    """Whether the request's view carries no @rate_limit (Flask-Limiter then does nothing for it)."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "rate_limit_budget", None) is None


def storage_settings(app: Flask) -> tuple[str, dict[str, Any]]:
    """The limits storage URI and options: Redis through the gateway's fast-fail client, else memory."""
    setting = "RATE_LIMIT_STORAGE_URL" if app.config.get("RATE_LIMIT_STORAGE_URL") else "REDIS_URL"
    url = app.config.get(setting)
    if not url:
        return "memory://", {}
    if urlsplit(url).scheme not in REDIS_SCHEMES:
        return url, {}  # another limits storage (memcached://...), used as given
    gateway = redis_gateway.of(app)
    return f"luca+{url}", {"client": gateway.connect(url, fast_fail=True), "key_prefix": gateway.key("limits")}


def make_limiter(app: Flask) -> Limiter:
    """A Limiter for app: no default limits, Redis or memory storage."""
    config = app.config
    for setting in ("RATE_LIMIT_MESSAGES", "RATE_LIMIT_UPLOADS", "RATE_LIMIT_AUTH_FAILURES"):
        parse_many(config[setting])  # a malformed limit fails at start-up, not silently per request
    uri, options = storage_settings(app)
    limiter = Limiter(
        key_func=client_address,
        strategy="fixed-window",
        storage_uri=uri,
        storage_options=options,
        in_memory_fallback_enabled=uri != "memory://",
        swallow_errors=True,  # should memory fail too, the request goes through unlimited, never a 500
        headers_enabled=False,  # no X-RateLimit-* headers (each would cost a Redis call); Retry-After on 429
        enabled=bool(config["RATE_LIMITS_ENABLED"]),
    )
    limiter.request_filter(unlimited_request)
    return limiter


class FailureBudget:
    """The failed-authentication budget of each client address, on the Limiter's storage (memory while that fails)."""

    def __init__(self, app: Flask, limiter: Limiter) -> None:
        self.setting = app.config["RATE_LIMIT_AUTH_FAILURES"]
        self.items = parse_many(self.setting)
        self.strategies: list[FixedWindowRateLimiter] = []
        if limiter.enabled:  # a disabled Limiter has no storage
            self.strategies.append(FixedWindowRateLimiter(limiter.storage))
            if not isinstance(limiter.storage, MemoryStorage):
                self.strategies.append(FixedWindowRateLimiter(MemoryStorage()))
        self._failing: set[int] = set()  # the strategies whose storage failed last time (logged once)

    def spend(self, address: str) -> int | None:
        """Count one failure of address; None while within budget, else the seconds until it may try again."""
        for index, strategy in enumerate(self.strategies):
            try:
                wait = self._spend(strategy, address)
            except Exception as exc:  # noqa: BLE001 - a storage failure: count in memory, never a 500
                if index not in self._failing:
                    self._failing.add(index)
                    log.warning("failed-authentication budget: %s storage failed (%s); counting in memory",
                                type(strategy.storage).__name__, type(exc).__name__)
                continue
            self._failing.discard(index)
            return wait
        return None

    def _spend(self, strategy: FixedWindowRateLimiter, address: str) -> int | None:
        """Hit every item of the budget; the longest wait among those used up, or None."""
        waits = [self._wait(strategy, item, address) for item in self.items
                 if not strategy.hit(item, address, AUTH_FAILURES_SCOPE)]
        return max(waits) if waits else None

    @staticmethod
    def _wait(strategy: FixedWindowRateLimiter, item: RateLimitItem, address: str) -> int:
        """Whole seconds until item's window for address ends (at least 1)."""
        reset_at = strategy.get_window_stats(item, address, AUTH_FAILURES_SCOPE).reset_time
        return max(1, math.ceil(reset_at - time.time()))


def refuse_credentials(error: APIError) -> NoReturn:
    """Credentials were sent and are wrong: count it for the client's address and raise error (a 401).

    Once the address has used up RATE_LIMIT_AUTH_FAILURES, the refusal is a 429 instead, with
    Retry-After. Call this only for credentials found wrong, never for valid ones.
    """
    budget = limits.auth_failures
    wait = budget.spend(client_address())
    if wait is not None:
        raise APIError(429, "rate_limited", limited_message(AUTH_FAILURES_MESSAGE, budget.setting, wait),
                       headers={"Retry-After": str(wait)})
    raise error


class AppLimits:
    """An app's Limiter and 429 handler, and its per-user limits, applied to views as they are first called."""

    def __init__(self, app: Flask) -> None:
        limiter = self.limiter = make_limiter(app)
        limiter.init_app(app)
        app.register_error_handler(RateLimitExceeded, handle_rate_limited)
        log.info("rate limits %s (storage %s)", "on" if limiter.enabled else "off",
                 type(limiter.storage).__name__ if limiter.enabled else "none")
        self.auth_failures = FailureBudget(app, limiter)
        self._limits = {
            budget: limiter.shared_limit(app.config[setting], scope=budget, key_func=user_key,
                                         error_message=message)
            for budget, (setting, message) in BUDGETS.items()
        }
        self._views: dict[tuple[str, Callable[..., Any]], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def limited(self, budget: str, view: Callable[..., Any]) -> Callable[..., Any]:
        """view wrapped by this app's Limiter with the budget's limit (made once per view)."""
        if not self.limiter.enabled:
            return view
        found = self._views.get((budget, view))
        if found is None:
            with self._lock:
                found = self._views.setdefault((budget, view), self._limits[budget](view))
        return found


def rate_limit(budget: str) -> Callable[[F], F]:
    """Decorator: charge each call of the view to the signed-in user's budget ("messages" or "uploads")."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown rate limit budget {budget!r}")

    def decorate(view: F) -> F:
        @wraps(view)
        def limited_view(*args: Any, **kwargs: Any) -> Any:
            return limits.limited(budget, view)(*args, **kwargs)

        limited_view.rate_limit_budget = budget  # type: ignore[attr-defined]  (read by unlimited_request)
        return limited_view  # type: ignore[return-value]

    return decorate


def retry_after(exc: RateLimitExceeded) -> int:
    """Whole seconds until the breached limit's window ends (at least 1)."""
    reset_at = None
    current = limits.limiter.current_limit
    if current is not None and current.breached:
        try:
            reset_at = current.window.reset_time
        except REDIS_ERRORS as err:  # Redis failed after the breach: assume a whole window
            log.warning("rate limit reset time unavailable: %s", type(err).__name__)
    if reset_at is None:
        reset_at = time.time() + exc.limit.limit.get_expiry()
    return max(1, math.ceil(reset_at - time.time()))


def limited_message(description: str, limit: object, wait: int) -> str:
    """What a client is told when a budget is used up: which one, its limit, and how long to wait."""
    return f"{description} (limit: {limit}); try again in {wait} seconds"


def handle_rate_limited(exc: RateLimitExceeded) -> ResponseReturnValue:
    """A used-up budget: 429 in Luca's error shape with Retry-After."""
    wait = retry_after(exc)
    return error_response(429, "rate_limited", limited_message(exc.description or "", exc.limit.limit, wait),
                          headers={"Retry-After": str(wait)})
