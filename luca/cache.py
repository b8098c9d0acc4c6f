"""The cache service: Redis (Flask-Caching's RedisCache) with an in-process SimpleCache fallback.

The cache is a helper, never a dependency: a Redis error never reaches a user. Commands
go through the `redis` breaker, so while Redis is down each costs nothing and the memory
tier answers, with TTLs clamped short because one process cannot see another's
invalidations. Every key lives under one prefix (REDIS_KEY_PREFIX + "cache:"), and every
key is built by cache_key() (inside the cache) or the Redis gateway's key() (the Redis key).
Per-user data is invalidated by bumping a per-user version.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from cachelib.serializers import RedisSerializer
from flask import Flask, Response
from flask_caching import Cache
from pybreaker import CircuitBreakerError
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from luca.errors import is_database_unavailable, rollback_quietly
from luca.extensions import redis_gateway
from luca.redis import REDIS_ERRORS, join_key

log = logging.getLogger(__name__)

# How often the per-process hit/miss counts are added to the shared totals in Redis.
STATS_FLUSH_SECONDS = 2.0


# Reads a user's data version and the value stored under that version, in one round trip.
VERSIONED_GET = """
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version .. ARGV[2])}
"""


def cache_key(kind: str, *parts: Any) -> str:
    """The one place cache keys are made: kind, then the parts, colon-separated (the same in both tiers)."""
    return join_key(kind, *parts)


@dataclass(frozen=True)
class Uncached:
    """A body cached_for_user() must serve but not keep: a colleague's shared conversation, which its owner
    may unshare at any moment (the viewer's cache version would not change)."""

    body: BaseModel


def json_response(body: str, cache_status: str, status: int = 200) -> Response:
    """A JSON body that is already serialised, with its X-Cache status."""
    return Response(body, status=status, mimetype="application/json", headers={"X-Cache": cache_status})


class CacheService:
    """Get and set through Redis when it answers and through process memory when it does not."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.disabled: bool = config["DISABLE_CACHE"]
        self.gateway = redis_gateway.of(app)
        self.ttl: int = config["CACHE_TTL"]
        self.fallback_ttl: int = config["CACHE_FALLBACK_TTL"]
        self.near_ttl: int = config["CACHE_NEAR_TTL"]
        self.redis = self.gateway.cache_client
        self.memory = Cache(config={"CACHE_TYPE": "SimpleCache", "CACHE_THRESHOLD": config["CACHE_MEMORY_ITEMS"],
                                    "CACHE_DEFAULT_TIMEOUT": self.fallback_ttl})
        self.memory.init_app(app)
        # Owned here, as Flask-Caching has no way to count a SimpleCache's keys: the service notes the keys
        # it puts in memory and counts those the tier still has (memory_keys).
        self._memory_keys: set[str] = set()
        self._memory_items: int = config["CACHE_MEMORY_ITEMS"]
        # Public API: the shared tier's serializer is handed to Flask-Caching (its CACHE_SERIALIZER setting),
        # so a value the versioned-get script reads past Flask-Caching is decoded by that same serializer.
        self.serializer = RedisSerializer()
        self.shared: Cache | None = None
        if self.redis is not None:
            self.shared = Cache(config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_HOST": self.redis,
                                        "CACHE_KEY_PREFIX": self.redis_key(""), "CACHE_DEFAULT_TIMEOUT": self.ttl,
                                        "CACHE_SERIALIZER": self.serializer})
            self.shared.init_app(app)
        self._redis_ok: bool | None = None  # None until the first command
        self._counts: Counter[str] = Counter()
        self._unflushed: Counter[str] = Counter()
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()
        self._memory_versions: dict[str, int] = {}
        self._script: Any = None
        self.stale_ttl: int = config["CACHE_STALE_TTL"]

    def redis_key(self, key: str) -> str:
        """Where a cache key lives in Redis (under the cache's prefix, so RQ's keys are never touched)."""
        return self.gateway.key("cache", key)

    # -- tiers -----------------------------------------------------------------------
    def _redis_call(self, operation: Callable[[Cache], Any]) -> tuple[bool, Any]:
        """Run operation on Redis; (False, None) when there is no Redis or it failed."""
        if self.shared is None:
            return False, None
        try:
            result = operation(self.shared)
        except REDIS_ERRORS as exc:
            self._note_redis(False, exc)
            return False, None
        self._note_redis(True)
        return True, result

    def _note_redis(self, ok: bool, exc: BaseException | None = None) -> None:
        """Log the switches between Redis and the memory fallback, once each."""
        if ok == self._redis_ok:
            return
        previous, self._redis_ok = self._redis_ok, ok
        if ok:
            log.info("[Redis] Connected successfully%s", " (the cache uses Redis again)" if previous is False else "")
        else:
            log.warning("[Cache] Redis unavailable (%s); using the in-process cache", type(exc).__name__)

    def _remember(self, key: str, value: Any, ttl: int) -> None:
        """Keep value in process memory for ttl seconds, and note its key."""
        self.memory.set(key, value, timeout=ttl)
        with self._lock:
            self._memory_keys.add(key)
            if len(self._memory_keys) > 2 * self._memory_items:  # the tier drops keys by itself; so must the notes
                self._memory_keys = {k for k in self._memory_keys if self.memory.has(k)}

    def memory_keys(self) -> int:
        """How many keys process memory holds (unexpired; public has() asked for each key put there)."""
        with self._lock:
            self._memory_keys = {k for k in self._memory_keys if self.memory.has(k)}
            return len(self._memory_keys)

    def count(self, what: str) -> None:
        """Add one to a named statistic (shared through Redis every few seconds)."""
        with self._lock:
            self._counts[what] += 1
            self._unflushed[what] += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Add this process's new counts to the shared totals every few seconds."""
        if self.redis is None or time.monotonic() - self._flushed_at < STATS_FLUSH_SECONDS:
            return
        with self._lock:
            pending, self._unflushed = self._unflushed, Counter()
            self._flushed_at = time.monotonic()
        if not pending:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for field, amount in pending.items():
                pipe.hincrby(self.redis_key("stats"), field, amount)
            pipe.execute()
        except REDIS_ERRORS:
            with self._lock:
                self._unflushed.update(pending)

    # -- the API the rest of Luca uses -------------------------------------------------------
    def get(self, key: str, near: bool = False) -> Any:
        """The cached value, or None; counts a hit or a miss for the tier that answered.

        near: also keep a copy in this process for CACHE_NEAR_TTL seconds and answer from it
        (for values read on every request, where another process's change may show that late).
        """
        if self.disabled:
            return None
        if near and self.near_ttl and self.shared is not None:
            value = self.memory.get(key)
            if value is not None:
                self.count("memory.hits")
                return value
        ok, value = self._redis_call(lambda c: c.get(key))
        if ok and near and value is not None and self.near_ttl:
            self._remember(key, value, self.near_ttl)
        tier = "redis" if ok else "memory"
        if not ok:
            value = self.memory.get(key)
        self.count(f"{tier}.{'hits' if value is not None else 'misses'}")
        return value

    def set(self, key: str, value: Any, ttl: int | None = None, near: bool = False) -> None:
        """Store value under key for ttl seconds (clamped short when Redis is not answering).

        near: a value read with get(near=True); it is kept in this process's memory too, at most
        CACHE_NEAR_TTL seconds (not CACHE_FALLBACK_TTL), the time the other processes may take to
        see its deletion.
        """
        if self.disabled:
            return
        ttl = ttl or self.ttl
        ok, _ = self._redis_call(lambda c: c.set(key, value, timeout=ttl))
        if ok and near and self.near_ttl:  # the next read here needs no round trip (as if get(near=True) had run)
            self._remember(key, value, min(ttl, self.near_ttl))
        if not ok:
            ttl = min(ttl, self.fallback_ttl, self.near_ttl if near else ttl)
            if ttl > 0:  # SimpleCache keeps a 0 timeout forever
                self._remember(key, value, ttl)
        log.debug("[Cache] Set %s (TTL: %ss)", key, ttl)

    def delete(self, *keys: str) -> bool:
        """Forget keys in both tiers; False when Redis may still hold them (configured, but it did not answer)."""
        if self.disabled or not keys:
            return True
        ok, _ = self._redis_call(lambda c: c.delete_many(*keys))
        self.memory.delete_many(*keys)
        with self._lock:
            self._memory_keys.difference_update(keys)
        return ok or self.shared is None

    def user_version(self, user_id: int) -> int:
        """The user's current data version, part of every per-user key."""
        key = cache_key("ver", user_id)
        ok, value = self._redis_call(lambda c: c.get(key))
        if ok:
            return int(value or 0)
        with self._lock:
            return self._memory_versions.get(key, 0)

    def get_for_user(self, kind: str, user_id: int, *parts: Any) -> tuple[str, Any]:
        """The key of a per-user value at the user's current version, and the value if cached.

        With Redis, the version and the value come back in one round trip (a Lua script),
        since every cached list or page would otherwise wait for two.
        """
        if self.shared is not None and self.redis is not None:
            stem, tail = cache_key(kind, user_id, "v\x00", *parts).split("\x00")  # around the version
            script = self._versioned_get_script()
            ok, found = self._redis_call(lambda c: script(keys=[self.redis_key(cache_key("ver", user_id))],
                                                          args=[self.redis_key(stem), tail]))
            if ok:
                value = self.serializer.loads(found[1])
                self.count(f"redis.{'hits' if value is not None else 'misses'}")
                return stem + (found[0] or b"0").decode() + tail, value
        key = cache_key(kind, user_id, f"v{self.user_version(user_id)}", *parts)
        return key, self.get(key)

    def cached_for_user(self, kind: str, user_id: int, parts: tuple[Any, ...],
                        build: Callable[[], BaseModel | Uncached], keep_stale: bool = False) -> Response:
        """Serve a per-user JSON body from the cache, or build, cache and serve it (X-Cache: hit, miss, disabled).

        With keep_stale, a copy outlives the fresh one and is served (X-Cache: stale) when
        the database cannot be reached. A build() that answers Uncached(body) is served, never kept.
        """
        if self.disabled:
            built = build()
            return json_response((built.body if isinstance(built, Uncached) else built).model_dump_json(), "disabled")
        key, body = self.get_for_user(kind, user_id, *parts)
        if body is not None:
            return json_response(body, "hit")
        stale_key = cache_key("stale", kind, user_id, *parts)
        try:
            built = build()
            if isinstance(built, Uncached):
                return json_response(built.body.model_dump_json(), "bypass")
            body = built.model_dump_json()
        except (SQLAlchemyError, CircuitBreakerError) as exc:
            if keep_stale and (isinstance(exc, CircuitBreakerError) or is_database_unavailable(exc)):
                stale = self.get(stale_key)
                if stale is not None:
                    rollback_quietly()
                    return json_response(stale, "stale")
            raise
        self.set(key, body)
        if keep_stale:
            self.set(stale_key, body, ttl=self.stale_ttl)
        return json_response(body, "miss")

    def _versioned_get_script(self) -> Any:
        if self._script is None:
            self._script = self.redis.register_script(VERSIONED_GET)
        return self._script

    def bump_user(self, user_id: int, pipeline: Any = None) -> None:
        """Invalidate every cached list and detail of the user, in every process sharing Redis.

        With a pipeline of the cache's Redis client, the INCR is queued on it for its caller to send.
        """
        if self.disabled:
            return
        key = cache_key("ver", user_id)
        with self._lock:
            self._memory_versions[key] = self._memory_versions.get(key, 0) + 1
        if pipeline is not None and self.shared is not None:
            pipeline.incr(self.redis_key(key))  # where Flask-Caching's inc() below puts it
            return
        self._redis_call(lambda c: c.cache.inc(key))  # Cache.cache: Flask-Caching's public door to the backend

    def counts(self) -> Counter[str]:
        """Every statistic: the shared totals when Redis answers, else this process's own."""
        if self.redis is not None:
            try:
                raw = self.redis.hgetall(self.redis_key("stats"))
            except REDIS_ERRORS:
                pass
            else:
                totals = Counter({k.decode(): int(v) for k, v in raw.items()})
                with self._lock:
                    totals.update(self._unflushed)
                return totals
        with self._lock:
            return Counter(self._counts)

    def get_stats(self) -> dict[str, Any]:
        """Hits and misses per tier, deduplication's saved calls, hit rates and Redis status."""
        totals = self.counts()

        def rate(good: int, bad: int) -> float | None:
            return round(good / (good + bad), 4) if good + bad else None

        def tier(name: str) -> dict[str, Any]:
            hits, misses = totals[f"{name}.hits"], totals[f"{name}.misses"]
            return {"hits": hits, "misses": misses, "hitRate": rate(hits, misses)}

        saved = totals["dedup.hits"] + totals["dedup.waited"]
        breaker = self.gateway.breaker
        all_hits = totals["redis.hits"] + totals["memory.hits"]
        all_misses = totals["redis.misses"] + totals["memory.misses"]
        return {
            "enabled": not self.disabled,
            "hitRate": rate(all_hits, all_misses),
            "memory": {**tier("memory"), "keys": self.memory_keys()},
            "redis": {**tier("redis"), "configured": self.shared is not None, "status": self._redis_status(),
                      "ready": self.shared is not None and breaker.redis_available(),
                      "breaker": breaker.current_state},
            "dedup": {"hits": totals["dedup.hits"], "waited": totals["dedup.waited"],
                      "misses": totals["dedup.misses"], "savedCalls": saved,
                      "hitRate": rate(saved, totals["dedup.misses"])},
            "ttl": {"default": self.ttl, "fallback": self.fallback_ttl},
        }

    def _redis_status(self) -> str:
        if self.shared is None:
            return "not configured"
        if self._redis_ok is None:
            return "unknown"
        return "connected" if self._redis_ok else "unavailable (using memory)"

    def clear(self) -> int:
        """Delete every key under the cache prefix (never RQ's keys); returns how many went."""
        self.memory.clear()
        with self._lock:
            self._memory_versions.clear()
            self._memory_keys.clear()
        if self.redis is None:
            return 0
        deleted = 0
        batch: list[bytes] = []
        # Unguarded: the operator's command shows a Redis error rather than a quiet fallback.
        for key in self.redis.raw.scan_iter(match=self.redis_key("*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += self.redis.raw.delete(*batch)
                batch = []
        if batch:
            deleted += self.redis.raw.delete(*batch)
        return deleted
