"""Circuit breakers (pybreaker) that never serialise the calls they guard.

pybreaker's own call() holds the breaker's lock for the whole guarded call, so every
call through one breaker would wait for the previous one. Breaker.guard() takes the
lock only to read the state and to record the outcome; in half-open exactly one trial
call goes through and the others fail fast. Breaker.record() is the one place an outcome is
judged (a failure, a success or no verdict), for guarded calls and streamed answers alike.

Every breaker is declared here: `AI-<provider>` (state shared through Redis when there
is one), `database`, `external-api` and `redis` (in-process).
"""
from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pybreaker
from flask import Flask
from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreakerError

from luca.ai.providers import is_provider_failure
from luca.extensions import redis_gateway
from luca.redis import REDIS_ERRORS

if TYPE_CHECKING:
    from luca.redis import GuardedRedis, RedisGateway

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a half-open trial may hold its slot before another call may try (seconds).
TRIAL_SLOT_SECONDS = 120


class LogListener(pybreaker.CircuitBreakerListener):
    """Logs every state change in the form operators grep for."""

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        """Log `[CircuitBreaker] <name> OPEN|HALF-OPEN|CLOSED`."""
        name = new_state.name
        if name == STATE_OPEN:
            log.warning("[CircuitBreaker] %s OPEN - failing fast for %ss after %s consecutive failures",
                        cb.name, int(cb.reset_timeout), cb.fail_max)
        elif name == STATE_HALF_OPEN:
            log.info("[CircuitBreaker] %s HALF-OPEN - letting one trial call through", cb.name)
        elif old_state is not None and old_state.name != STATE_CLOSED:
            log.info("[CircuitBreaker] %s CLOSED - service recovered", cb.name)


# Sets KEYS[1] to ARGV[1] unless it holds a later time already (pybreaker's opened_at, atomically).
SET_IF_LATER = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(ARGV[1]) > tonumber(current) then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """A breaker's state in Redis, under pybreaker's CircuitRedisStorage keys, raising Redis errors.

    pybreaker's own Redis storage logs and swallows every Redis error, so its caller cannot
    tell a failed read from a real value; this one lets FallbackStorage switch to memory.
    """

    def __init__(self, name: str, redis: GuardedRedis, key: Callable[[str], str]) -> None:
        super().__init__(name)
        self._redis = redis
        self._key = key
        self._set_if_later = redis.register_script(SET_IF_LATER)

    def _int(self, name: str) -> int:
        return int(self._redis.get(self._key(name)) or 0)

    @property
    def state(self) -> str:
        found = self._redis.get(self._key("state"))
        if found is None:  # never set, or lost with Redis's data: start again closed
            for name, value in (("fail_counter", 0), ("success_counter", 0), ("state", STATE_CLOSED)):
                self._redis.setnx(self._key(name), value)
            return STATE_CLOSED
        return found.decode()

    @state.setter
    def state(self, state: str) -> None:
        self._redis.set(self._key("state"), str(state))

    def increment_counter(self) -> None:
        self._redis.incr(self._key("fail_counter"))

    def reset_counter(self) -> None:
        self._redis.set(self._key("fail_counter"), 0)

    def increment_success_counter(self) -> None:
        self._redis.incr(self._key("success_counter"))

    def reset_success_counter(self) -> None:
        self._redis.set(self._key("success_counter"), 0)

    @property
    def counter(self) -> int:
        return self._int("fail_counter")

    @property
    def success_counter(self) -> int:
        return self._int("success_counter")

    @property
    def opened_at(self) -> datetime | None:
        timestamp = self._int("opened_at")
        return datetime(*time.gmtime(timestamp)[:6], tzinfo=UTC) if timestamp else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._set_if_later(keys=[self._key("opened_at")], args=[calendar.timegm(value.timetuple())])


class FallbackStorage(pybreaker.CircuitBreakerStorage):
    """A breaker's state shared through Redis while Redis answers; in-process memory while it does not."""

    def __init__(self, name: str, gateway: RedisGateway, read_seconds: float = 1.0) -> None:
        super().__init__(name)
        assert gateway.client is not None, "shared breaker state needs REDIS_URL"
        self._redis = gateway.client
        self._trial_key = gateway.key("breaker", name, "trial")
        # pybreaker's CircuitRedisStorage keys, so every process (of any version) reads the same state.
        self._shared = SharedStorage(name, gateway.client,
                                     lambda part: gateway.key("breaker", name, "pybreaker", part))
        self._memory = pybreaker.CircuitMemoryStorage(STATE_CLOSED)
        # The state and the failure count are read from Redis at most this often: every AI call
        # asks for them, and another process's change may take this long to be seen here.
        self._read_seconds = read_seconds
        self._reads: dict[str, tuple[float, Any]] = {}

    def _read(self, name: str, read: Callable[[], T]) -> T:
        """A shared value, from the last read if it is recent enough."""
        now = time.monotonic()
        last = self._reads.get(name)
        if last is not None and now - last[0] < self._read_seconds:
            return last[1]
        value = read()
        self._reads[name] = (now, value)
        return value

    def _forget(self, *names: str) -> None:
        for name in names:
            self._reads.pop(name, None)

    def _do(self, operation: Callable[[pybreaker.CircuitBreakerStorage], T]) -> T:
        """Run operation on the shared state; while Redis fails (or its breaker is open), in memory."""
        try:
            return operation(self._shared)
        except REDIS_ERRORS:
            return operation(self._memory)

    @property
    def state(self) -> str:
        return self._read("state", lambda: self._do(lambda s: s.state))

    @state.setter
    def state(self, state: str) -> None:
        self._do(lambda s: setattr(s, "state", state))
        self._forget("state", "counter")

    def increment_counter(self) -> None:
        self._do(lambda s: s.increment_counter())
        self._forget("counter")

    def reset_counter(self) -> None:
        self._do(lambda s: s.reset_counter())
        self._reads["counter"] = (time.monotonic(), 0)

    def increment_success_counter(self) -> None:
        self._do(lambda s: s.increment_success_counter())

    def reset_success_counter(self) -> None:
        self._do(lambda s: s.reset_success_counter())

    @property
    def counter(self) -> int:
        return self._read("counter", lambda: self._do(lambda s: s.counter))

    @property
    def success_counter(self) -> int:
        return self._do(lambda s: s.success_counter)

    @property
    def opened_at(self) -> datetime | None:
        return self._do(lambda s: s.opened_at)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._do(lambda s: setattr(s, "opened_at", value))

    def claim_trial(self, name: str) -> bool:
        """Take the one half-open trial slot across every process sharing Redis."""
        try:
            return bool(self._redis.set(self._trial_key, name, nx=True, ex=TRIAL_SLOT_SECONDS))
        except REDIS_ERRORS:
            return True  # Redis is gone: the in-process slot alone decides

    def release_trial(self) -> None:
        """Free the trial slot."""
        try:
            self._redis.delete(self._trial_key)
        except REDIS_ERRORS:
            pass


class BreakerOpen(CircuitBreakerError):
    """A call refused by an open breaker (or a half-open one whose trial is in flight), naming the breaker."""

    def __init__(self, breaker: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after  # seconds until the breaker lets a trial through


class Breaker(pybreaker.CircuitBreaker):
    """A pybreaker breaker whose guarded calls run outside its lock, with statistics."""

    def __init__(self, name: str, *, fail_max: int, reset_timeout: float,
                 is_failure: Callable[[BaseException], bool] | None = None,
                 storage: pybreaker.CircuitBreakerStorage | None = None) -> None:
        exclude = [lambda exc: not is_failure(exc)] if is_failure else []
        super().__init__(fail_max=fail_max, reset_timeout=reset_timeout, name=name, exclude=exclude,
                         listeners=[LogListener()], state_storage=storage)
        self._trial_local = False
        self.successes = 0
        self.failures = 0
        self.rejections = 0
        self.last_failure: str | None = None
        self.last_failure_at: datetime | None = None

    # -- admission -------------------------------------------------------
    def seconds_until_half_open(self) -> float:
        """How long an open breaker keeps failing fast (0 when it is not open)."""
        if self.current_state != STATE_OPEN:
            return 0.0
        opened_at = self._state_storage.opened_at
        if opened_at is None:
            return 0.0
        return max(0.0, opened_at.timestamp() + self.reset_timeout - time.time())

    def allow(self) -> bool:
        """Admit a call or raise BreakerOpen; True means the call is the half-open trial."""
        with self._lock:
            state = self.state.name  # syncs with a change made by another process
            if state == STATE_CLOSED:
                return False
            if state == STATE_OPEN:
                wait = self.seconds_until_half_open()
                if wait > 0:
                    self.rejections += 1
                    raise BreakerOpen(self.name, f"{self.name} is open", wait)
                self.half_open()
            if self._trial_local or not self._claim_trial():
                self.rejections += 1
                raise BreakerOpen(self.name, f"{self.name} is half-open and its trial call is in flight", 0.0)
            self._trial_local = True
            return True

    def _claim_trial(self) -> bool:
        claim = getattr(self._state_storage, "claim_trial", None)
        return claim(self.name) if claim else True

    def _release_trial(self) -> None:
        self._trial_local = False
        release = getattr(self._state_storage, "release_trial", None)
        if release:
            release()

    # -- outcome -----------------------------------------------------------
    def record(self, trial: bool, exc: BaseException | None = None) -> None:
        """Record how a call that allow() admitted ended: the one place a failure is told from a success.

        No exception is a success. GeneratorExit (a stream closed early, the call given up) is no
        verdict: it only frees the trial slot. Any other exception is a failure when the breaker's
        is_failure says so (every exception, for a breaker declared without one), else a success:
        the service answered, the fault was the caller's.
        """
        if isinstance(exc, GeneratorExit):
            self._record_nothing(trial)
        elif exc is not None and self.is_system_error(exc):  # type: ignore[arg-type]
            self._record_failure(exc, trial)
        else:
            self._record_success(trial)

    def _record_success(self, trial: bool) -> None:
        """A guarded call succeeded: reset the failure count; a successful trial closes the breaker."""
        with self._lock:
            self.successes += 1
            if trial:
                self._release_trial()
                self.close()
            elif self._state_storage.counter:
                self._state_storage.reset_counter()

    def _record_failure(self, exc: BaseException, trial: bool) -> None:
        """A guarded call failed: count it; at the threshold, or on a failed trial, open."""
        with self._lock:
            self.failures += 1
            self.last_failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.last_failure_at = datetime.now(UTC)
            self._inc_counter()
            if trial:
                self._release_trial()
                self.open()
            elif self.current_state == STATE_CLOSED and self._state_storage.counter >= self.fail_max:
                self.open()

    def _record_nothing(self, trial: bool) -> None:
        """The call ended without a verdict (cancelled): just free the trial slot."""
        if trial:
            with self._lock:
                self._release_trial()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block as one guarded call; the lock is not held while it runs."""
        trial = self.allow()
        try:
            yield
        except BaseException as exc:
            self.record(trial, exc)
            raise
        self.record(trial)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """pybreaker's call(), but concurrent."""
        with self.guard():
            return func(*args, **kwargs)

    def redis_available(self) -> bool:
        """Whether calls would be let through now (without taking a trial slot)."""
        return self.current_state != STATE_OPEN or self.seconds_until_half_open() == 0

    # -- reporting -------------------------------------------------------------
    def reset(self) -> None:
        """Close the breaker by hand (operator action)."""
        with self._lock:
            self._release_trial()
            self.close()

    def stats(self) -> dict[str, Any]:
        """State and counts, as the admin API and metrics show them."""
        opened_at = self._state_storage.opened_at if self.current_state != STATE_CLOSED else None
        return {
            "state": self.current_state,
            "stats": {
                "failures": self.failures,
                "successes": self.successes,
                "rejections": self.rejections,
                "consecutiveFailures": self.fail_counter,
                "failMax": self.fail_max,
                "resetTimeout": self.reset_timeout,
                "lastFailure": self.last_failure,
                "lastFailureAt": self.last_failure_at.isoformat() if self.last_failure_at else None,
                "openedAt": opened_at.isoformat() if opened_at else None,
                "retryAfter": round(self.seconds_until_half_open(), 1),
            },
        }


class Breakers:
    """The app's breakers; an `AI-<provider>` breaker is made on its first use."""

    def __init__(self, app: Flask) -> None:
        self.config = app.config
        self._app = app
        self._lock = threading.Lock()
        self._ai: dict[str, Breaker] = {}
        self.redis = Breaker("redis", fail_max=app.config["REDIS_BREAKER_FAIL_MAX"],
                             reset_timeout=app.config["REDIS_BREAKER_RESET_TIMEOUT"],
                             is_failure=lambda exc: isinstance(exc, REDIS_ERRORS))
        self.database = Breaker("database", fail_max=app.config["DB_BREAKER_FAIL_MAX"],
                                reset_timeout=app.config["DB_BREAKER_RESET_TIMEOUT"])
        self.external = Breaker("external-api", fail_max=app.config["EXTERNAL_BREAKER_FAIL_MAX"],
                                reset_timeout=app.config["EXTERNAL_BREAKER_RESET_TIMEOUT"])

    def ai(self, provider: str) -> Breaker:
        """The breaker `AI-<provider>`, its state shared through Redis when there is one.

        Its failure rule is fixed here, whoever asks for it first: a provider fails when it does not
        answer or answers 401, 403, 408, 429 or 5xx (is_provider_failure); a 4xx that our own
        request caused is an answer.
        """
        with self._lock:
            if provider not in self._ai:
                name = f"AI-{provider}"
                gateway = redis_gateway.of(self._app)
                storage = (FallbackStorage(name, gateway, self.config["AI_BREAKER_SHARED_READ"])
                           if gateway.client is not None else None)
                self._ai[provider] = Breaker(
                    name, fail_max=self.config["AI_BREAKER_FAIL_MAX"],
                    reset_timeout=self.config["AI_BREAKER_RESET_TIMEOUT"],
                    is_failure=is_provider_failure, storage=storage)
            return self._ai[provider]

    def all(self) -> list[Breaker]:
        """Every breaker made so far."""
        return [self.database, self.external, self.redis, *self.providers()]

    def find(self, name: str) -> Breaker | None:
        """A breaker by name (`database`, `external-api`, `redis`, `AI-<provider>`); a configured provider's is made."""
        found = next((b for b in self.all() if b.name == name), None)
        if found is None and name.startswith("AI-") and name[3:] in self.config["AI_PROVIDERS"]:
            found = self.ai(name[3:])
        return found

    def providers(self) -> list[Breaker]:
        """The `AI-<provider>` breakers made so far."""
        return list(self._ai.values())

    def stats(self) -> dict[str, Any]:
        """Every breaker's state and counts: database, externalAPI, redis and one per AI provider."""
        return {
            "database": self.database.stats(),
            "externalAPI": self.external.stats(),
            "redis": self.redis.stats(),
            "aiProviders": {b.name: b.stats() for b in self.providers()},
        }


def guard_database(engine: Any, breaker: Breaker) -> None:
    """Put the `database` breaker around every new connection; count dropped connections as failures.

    While it is open, requests get a 503 at once instead of each waiting for the connect
    timeout. The database's own timeouts (connect_timeout, statement_timeout) bound the
    calls it lets through.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def connect_through_breaker(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        with breaker.guard():
            return dialect.connect(*cargs, **cparams)

    @event.listens_for(engine, "handle_error")
    def count_disconnects(context: Any) -> None:
        if context.is_disconnect and context.connection is not None:
            breaker.record(False, context.original_exception)  # (the database breaker counts every error)
