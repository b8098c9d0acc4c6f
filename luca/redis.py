"""The only door to Redis: the client factory, the breaker wrapper and the key builder.

- make_client(url, config): one TLS and timeout rule for every client Luca makes (rq-dashboard's
  URL carries the same options, see connection_options). Two profiles: the default (short
  timeouts, a few quick retries of a refused or reset connection) and fast_fail, for rate limits.
- GuardedRedis: a client whose commands, pipelines and registered scripts pass the app's
  `redis` breaker. While it is open each fails at once with a RedisError, so a dead Redis costs
  nothing per request; callers catch REDIS_ERRORS and fall back to their in-process path.
- RedisGateway (the app's `redis_gateway`): its guarded clients and key(), which spells every
  Luca key: key("cache", "stats") is "<REDIS_KEY_PREFIX>cache:stats". RQ's keys are RQ's own.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask
from pybreaker import CircuitBreakerError
from redis import Redis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.commands.core import Script
from redis.exceptions import ConnectionError, RedisError
from redis.retry import Retry

from luca.extensions import breakers

if TYPE_CHECKING:
    from redis.client import Pipeline

    from luca.breakers import Breaker

T = TypeVar("T")

# What a failing Redis raises: redis-py's errors, and socket errors it lets through.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)


def connection_options(url: str, config: Any) -> dict[str, Any]:
    """The timeouts and TLS settings of every connection to url."""
    timeout = config["REDIS_SOCKET_TIMEOUT"]
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if url.startswith("rediss://") and not config.get("REDIS_TLS_VERIFY", False):
        options["ssl_cert_reqs"] = "none"  # Heroku Redis serves TLS with a self-signed certificate
    return options


def make_client(url: str, config: Any, *, fast_fail: bool = False) -> Redis:
    """A Redis client for url that fails fast; connected lazily, so a dead Redis never stops start-up.

    The default profile retries a refused or reset connection a few times, never a timeout:
    a Redis that hangs would otherwise cost (retries + 1) x (connect + read) timeouts a command.
    fast_fail (rate limits) retries once without backoff: redis-py repeats the connection
    handshake inside every retried command, so against a Redis that accepts connections but never
    answers the default takes about 4.5 s, this at most two REDIS_SOCKET_TIMEOUTs; the one retry
    still gets past a connection the server dropped while it sat idle.
    """
    options = connection_options(url, config)
    if fast_fail:
        options["retry"] = Retry(NoBackoff(), 1)
    else:
        options["retry"] = Retry(ConstantBackoff(config["REDIS_RETRY_DELAY"]), config["REDIS_MAX_RETRIES"],
                                 supported_errors=(ConnectionError,))
        options["health_check_interval"] = 30
    return Redis.from_url(url, **options)


def join_key(*parts: Any) -> str:
    """Key parts, colon-separated: how every Luca key is spelled."""
    return ":".join(str(part) for part in parts)


class GuardedRedis:
    """A Redis client whose commands, pipelines and scripts go through the `redis` breaker."""

    def __init__(self, client: Redis, breaker: Breaker) -> None:
        self.raw = client  # for RQ and scans, which need the client itself
        self.breaker = breaker
        self.scripts: list[Script] = []  # registered, so warm_up() can load them

    def call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run work (one command or several) as one call through the breaker; an open breaker is a RedisError."""
        try:
            return self.breaker.call(work, *args, **kwargs)
        except CircuitBreakerError as exc:
            raise RedisError(str(exc)) from None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.raw, name)
        if not callable(attribute):
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self.call(attribute, *args, **kwargs)

        return guarded

    def pipeline(self, transaction: bool = True) -> GuardedPipeline:
        """A pipeline whose execute() is one guarded call."""
        return GuardedPipeline(self.raw.pipeline(transaction=transaction), self)

    def register_script(self, source: str) -> GuardedScript:
        """A Lua script whose every run is one guarded call."""
        script = self.raw.register_script(source)
        self.scripts.append(script)
        return GuardedScript(script, self)

    def warm_up(self) -> None:
        """Open one connection and load the registered scripts (a first EVALSHA would meet NOSCRIPT): one round trip."""
        pipeline = self.pipeline(transaction=False)
        pipeline.ping()
        for script in self.scripts:
            pipeline.script_load(script.script)
        pipeline.execute()

    def available(self) -> bool:
        """Whether the breaker would let a command through now."""
        return self.breaker.redis_available()


class GuardedPipeline:
    """A redis-py pipeline that queues as usual and executes through the breaker."""

    def __init__(self, pipeline: Pipeline, guard: GuardedRedis) -> None:
        self._pipeline = pipeline
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands."""
        return self._guard.call(self._pipeline.execute, raise_on_error)


class GuardedScript:
    """A registered Lua script run through the breaker."""

    def __init__(self, script: Script, guard: GuardedRedis) -> None:
        self._script = script
        self._guard = guard

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        return self._guard.call(self._script, keys=keys, args=args, client=client)


class RedisGateway:
    """An app's door to Redis: its clients behind the `redis` breaker, and its key builder."""

    def __init__(self, app: Flask) -> None:
        self.config = app.config
        self.prefix: str = app.config["REDIS_KEY_PREFIX"]
        self.breaker = breakers.of(app).redis
        self._clients: dict[tuple[str, bool], GuardedRedis] = {}
        self.client = self.connect(app.config.get("REDIS_URL"))  # queues, slots, breakers, alerts, locks
        self.cache_client = self.connect(app.config.get("REDIS_CACHE_URL")) or self.client

    def connect(self, url: str | None, *, fast_fail: bool = False) -> GuardedRedis | None:
        """The app's guarded client for url in a profile (one per URL and profile); None without a URL."""
        if not url:
            return None
        found = self._clients.get((url, fast_fail))
        if found is None:
            found = GuardedRedis(make_client(url, self.config, fast_fail=fast_fail), self.breaker)
            self._clients[(url, fast_fail)] = found
        return found

    def key(self, *parts: Any) -> str:
        """A Luca key: the prefix, then the parts, colon-separated."""
        return self.prefix + join_key(*parts)

    def available(self) -> bool:
        """Whether the `redis` breaker would let a command through now."""
        return self.breaker.redis_available()

    def warm_up(self) -> None:
        """Open a connection of every client and load its scripts; a Redis that fails is left to the requests."""
        for guarded in self._clients.values():
            try:
                guarded.warm_up()
            except REDIS_ERRORS:
                pass

    def close(self) -> None:
        """Close every client (their connection pools)."""
        for guarded in self._clients.values():
            guarded.raw.close()
