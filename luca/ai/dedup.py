"""Deduplicated AI answers: identical contexts get one provider call, and never leak between users.

The key is a hash of everything the answer depends on: the provider route (names and
models, in order), the system prompt, every message of the context and the content of
attached files. Only a context with nothing private in it — a conversation's first
question, no files — is shared between the users of one organisation; anything else is
scoped to its user. Nothing is shared across organisations.
Concurrent identical requests make one provider call (single flight): the first takes a
lock (in the process, and in Redis across processes), the others wait for its answer for
a bounded time and then call the provider themselves.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

from flask import Flask

from luca.ai.base import ChatMessage, Completion, Options, Provider, StreamEnd
from luca.cache import cache_key
from luca.extensions import cache
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05


def answer_key(route: Sequence[Provider], context: list[ChatMessage], user_id: int,
               file_digests: Sequence[str] = (), *, scope: str = "user", options: Options | None = None) -> str:
    """The dedup cache key of a context: shared within scope when nothing in it is private, else the user's own.

    scope names who may share a context without private content: "org<id>" (one organisation's
    users, see sharing_scope) or "user" (nobody: the default, and what a caller passes when the
    context holds something private, e.g. a client's own system prompt). options (max_tokens, temperature) change the answer, so they are part of the key.
    """
    questions = [m for m in context if m["role"] == "user"]
    private = (scope == "user" or bool(file_digests) or len(questions) != 1
               or any(m["role"] == "assistant" for m in context))
    material = {
        "route": [[p.name, p.model] for p in route],
        "mode": "chat",
        "messages": [[m["role"], m["content"]] for m in context],
        "files": list(file_digests),
    }
    if options:  # absent for the REST API, whose keys stay what they were
        material["options"] = dict(sorted(options.items()))
    digest = hashlib.sha256(json.dumps(material, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    return cache_key("ai", f"user{user_id}" if private else scope, digest)


def sharing_scope(user: object) -> str:
    """Where a user's contexts without private content are shared: their organisation, never beyond it."""
    organisation = getattr(user, "organisation_id", None)
    return f"org{organisation}" if organisation is not None else "user"


@dataclass
class Flight:
    """One answer being computed in this process: set when it ends, with the answer if there is one."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: Completion | None = None


class Deduplicator:
    """Serves repeated answers from the cache and collapses concurrent identical calls into one."""

    def __init__(self, app: Flask) -> None:
        self.cache = cache.of(app)
        self.ttl: int = app.config["AI_DEDUP_TTL"]
        self.wait_seconds: float = app.config["AI_DEDUP_WAIT"]
        self.lock_seconds: float = app.config["AI_TIMEOUT"] + 5  # the longest a leader may compute
        self._inflight: dict[str, Flight] = {}
        self._owned: set[str] = set()
        self._lock = threading.Lock()

    def cached(self, key: str) -> Completion | None:
        """A stored answer for key, if there is one."""
        stored = self.cache.get(key)
        return Completion(**stored) if stored else None

    def answer(self, key: str, compute: Callable[[], Completion]) -> tuple[Completion, bool]:
        """The answer for key and whether it came from the cache; compute() runs at most once at a time."""
        hit, leader = self.begin(key)
        if hit:
            return hit, True
        try:
            completion = compute()
            self.store(key, completion)  # before finish(): the waiters read it as they wake
        finally:
            if leader:
                self.finish(key)
        return completion, False

    def store(self, key: str, completion: Completion) -> None:
        """Keep an answer for later identical contexts (and hand it to this process's waiting twins)."""
        with self._lock:
            flight = self._inflight.get(key)
            if flight is not None:
                flight.answer = completion
        self.cache.set(key, asdict(completion), ttl=self.ttl)

    # -- single flight -----------------------------------------------------------------
    def begin(self, key: str) -> tuple[Completion | None, bool]:
        """A finished answer (stored, or written meanwhile by a concurrent twin), or the duty to write it.

        Returns (answer, False), or (None, leader). A leader must call finish(key) when
        it is done, whether it succeeded or not; a non-leader without an answer (its
        twin failed or took too long) computes on its own.
        """
        hit = self.cached(key)
        if hit:
            self.cache.count("dedup.hits")
            return hit, False
        with self._lock:
            flight = self._inflight.get(key)
            if flight is None:
                self._inflight[key] = Flight()
        if flight is not None:  # a thread of this process is on it
            flight.done.wait(self.wait_seconds)
            return self._answered_meanwhile(key, flight), False
        if self._lock_across_processes(key):
            self.cache.count("dedup.misses")
            return None, True
        hit = self._wait_for_other_process(key)
        if hit:
            self._finish_local(key)
            return hit, False
        self.cache.count("dedup.misses")
        return None, True  # the other process failed: this one computes, its local twins wait for it

    def finish(self, key: str) -> None:
        """Release the key: waiting twins read the stored answer, or compute themselves if there is none."""
        redis = self.cache.redis
        with self._lock:
            owned = key in self._owned
            self._owned.discard(key)
        if redis is not None and owned:
            try:
                redis.delete(self._lock_key(key))
            except REDIS_ERRORS:
                pass
        self._finish_local(key)

    def _answered_meanwhile(self, key: str, flight: Flight) -> Completion | None:
        # The twin's answer itself, so a Redis that failed to store or to read it costs no second call.
        hit = flight.answer or self.cached(key)
        self.cache.count("dedup.waited" if hit else "dedup.misses")
        return hit

    def _lock_key(self, key: str) -> str:
        """The Redis key of the lock its leader holds while computing key's answer."""
        return self.cache.redis_key(cache_key("lock", key))

    def _lock_across_processes(self, key: str) -> bool:
        """Take the Redis lock for key; True without Redis (the in-process lock is all there is)."""
        redis = self.cache.redis
        if redis is None:
            return True
        try:
            taken = redis.set(self._lock_key(key), "1", nx=True, px=int(self.lock_seconds * 1000))
        except REDIS_ERRORS:
            return True
        if taken:
            with self._lock:
                self._owned.add(key)
        return bool(taken)

    def _wait_for_other_process(self, key: str) -> Completion | None:
        """Poll for another process's answer until its lock goes or the wait runs out."""
        redis = self.cache.redis
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            hit = self.cached(key)
            if hit:
                self.cache.count("dedup.waited")
                return hit
            try:
                if redis is None or not redis.exists(self._lock_key(key)):
                    return self.cached(key)
            except REDIS_ERRORS:
                return None
        return None

    def _finish_local(self, key: str) -> None:
        with self._lock:
            flight = self._inflight.pop(key, None)
        if flight:
            flight.done.set()


class ReplayStream:
    """A stored answer played back as a stream, shaped like chain.AnswerStream."""

    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        self.provider = SimpleNamespace(name=completion.provider, model=completion.model)
        self.end = StreamEnd(tokens_in=completion.tokens_in, tokens_out=completion.tokens_out)

    def __iter__(self) -> Iterator[str]:
        """The answer in word-sized pieces."""
        yield from re.findall(r"\S+\s*|\s+", self.completion.text) or [""]
