"""One Redis client per app, with short timeouts, and a proxy that routes commands through the `redis` breaker."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)


def make_redis(url: str, config: dict[str, Any]) -> Redis:
    """A Redis client that fails fast: short timeouts, a few quick retries."""
    options: dict[str, Any] = {
        "socket_timeout": config["REDIS_SOCKET_TIMEOUT"],
        "socket_connect_timeout": config["REDIS_SOCKET_TIMEOUT"],
        # Retry a refused or reset connection, never a timeout: a Redis that hangs would
        # otherwise cost (retries + 1) x (connect + read) timeouts per command.
        "retry": Retry(ConstantBackoff(config["REDIS_RETRY_DELAY"]), config["REDIS_MAX_RETRIES"],
                       supported_errors=(ConnectionError,)),
        "health_check_interval": 30,
    }
    if url.startswith("rediss://") and not config.get("REDIS_TLS_VERIFY", False):
        # Heroku Redis serves TLS with a self-signed certificate.
        options["ssl_cert_reqs"] = "none"
    return Redis.from_url(url, **options)


def get_redis(app: Flask | None = None, setting: str = "REDIS_URL") -> Redis | None:
    """The app's Redis client for a URL setting (REDIS_URL, or REDIS_CACHE_URL), or None when unset."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    name = f"luca.redis:{setting}"
    if name not in app.extensions:
        url = app.config.get(setting)
        app.extensions[name] = make_redis(url, app.config) if url else None
    return app.extensions[name]


class GuardedRedis:
    """A Redis client whose commands go through the `redis` breaker.

    While the breaker is open every command raises RedisError at once, so a dead
    Redis costs nothing per request; callers fall back to their in-process path.
    """

    def __init__(self, client: Redis, breaker: Any) -> None:
        self._client = client
        self._breaker = breaker

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name in {"pipeline", "lock"}:
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._breaker.call_redis(attribute, *args, **kwargs)

        return guarded

    @property
    def breaker(self) -> Any:
        """The `redis` breaker these commands go through."""
        return self._breaker

    @property
    def client(self) -> Redis:
        """The unguarded client (for pipelines and libraries that need the real thing)."""
        return self._client


__all__ = ["GuardedRedis", "RedisError", "get_redis", "make_redis"]
