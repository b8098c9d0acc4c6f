"""Which provider answers: the first in AI_PROVIDERS order whose breaker lets it, falling back on failure."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from flask import Flask
from pybreaker import CircuitBreakerError

from luca.ai.base import ChatMessage, Completion, Options, Provider, StreamEnd
from luca.ai.offline import OfflineProvider
from luca.ai.providers import OpenAICompatibleProvider, warm_sdk
from luca.breakers import Breaker
from luca.extensions import breakers, providers
from luca.metrics import record_ai_call

log = logging.getLogger(__name__)

# Retry-After when every provider failed but no breaker is open yet (seconds).
DEFAULT_RETRY_AFTER = 10


class ProvidersUnavailable(Exception):
    """Every provider failed or is behind an open breaker."""

    def __init__(self, retry_after: int, errors: list[str]) -> None:
        super().__init__("no AI provider is available: " + "; ".join(errors))
        self.retry_after = retry_after
        self.errors = errors


def build_providers(app: Flask) -> list[Provider]:
    """The configured providers in order; one without a base URL or key is left out with a warning."""
    built: list[Provider] = []
    for name in app.config["AI_PROVIDERS"]:
        if name == "offline":
            built.append(OfflineProvider())
            continue
        settings = app.config["AI_PROVIDER_SETTINGS"].get(name, {})
        if not settings.get("base_url") or not settings.get("api_key") or not settings.get("model"):
            log.warning("[AI] provider %s is listed in AI_PROVIDERS but has no base URL, key or model; skipped", name)
            continue
        built.append(OpenAICompatibleProvider(
            name, base_url=settings["base_url"], api_key=settings["api_key"], model=settings["model"],
            timeout=app.config["AI_TIMEOUT"], connect_timeout=app.config["AI_CONNECT_TIMEOUT"],
            max_tokens=app.config["AI_MAX_OUTPUT_TOKENS"]))
    return built or [OfflineProvider()]


class Providers:
    """The app's providers, in AI_PROVIDERS order (built once; their HTTP clients keep connections alive)."""

    def __init__(self, app: Flask) -> None:
        self._providers = build_providers(app)
        if any(isinstance(p, OpenAICompatibleProvider) for p in self._providers):
            warm_sdk()

    def all(self) -> list[Provider]:
        """The providers, in the order they are asked."""
        return self._providers

    def close(self) -> None:
        """Close the providers' HTTP clients."""
        for provider in self._providers:
            client = getattr(provider, "client", None)
            if client is not None:
                client.close()


def breaker_for(provider: Provider) -> Breaker | None:
    """The provider's breaker; the offline provider cannot fail and has none."""
    if isinstance(provider, OfflineProvider):
        return None
    return breakers.ai(provider.name)


def guarded(provider: Provider) -> AbstractContextManager[Any]:
    """A guard around one call to provider."""
    breaker = breaker_for(provider)
    return breaker.guard() if breaker else nullcontext()


def retry_after() -> int:
    """Seconds until the first open AI breaker half-opens (a default when none is open)."""
    waits = [b.seconds_until_half_open() for p in providers.all() if (b := breaker_for(p))]
    waits = [w for w in waits if w > 0]
    return max(1, math.ceil(min(waits))) if waits else DEFAULT_RETRY_AFTER


def describe(provider: Provider, exc: BaseException) -> str:
    """A short, log-safe account of why a provider did not answer."""
    if isinstance(exc, CircuitBreakerError):
        return f"{provider.name}: breaker open"
    return f"{provider.name}: {type(exc).__name__}"


def record_failure(provider: Provider, exc: BaseException, started: float) -> None:
    """Count a provider attempt that did not answer: rejected by its breaker, or failed."""
    if isinstance(exc, CircuitBreakerError):
        record_ai_call(provider.name, provider.model, "rejected")
    else:
        record_ai_call(provider.name, provider.model, "error", time.perf_counter() - started)


def record_success(completion: Completion) -> None:
    """Count a provider answer with its latency and tokens."""
    record_ai_call(completion.provider, completion.model, "ok", completion.latency_ms / 1000,
                   completion.tokens_in, completion.tokens_out)


def answer(messages: list[ChatMessage], route: Sequence[Provider] | None = None,
           options: Options | None = None) -> Completion:
    """Answer with the first provider of route (default: all, in order) that can; ProvidersUnavailable when none can."""
    errors: list[str] = []
    for provider in route or providers.all():
        started = time.perf_counter()
        try:
            with guarded(provider):
                completion = provider.complete(messages, options)
        except Exception as exc:  # noqa: BLE001 - any provider error means: try the next one
            errors.append(describe(provider, exc))
            record_failure(provider, exc, started)
            if not isinstance(exc, CircuitBreakerError):
                log.warning("[AI] %s failed (%s); trying the next provider", provider.name, type(exc).__name__)
            continue
        record_success(completion)
        return completion
    raise ProvidersUnavailable(retry_after(), errors)


class AnswerStream:
    """A provider's streamed answer, opened with its first delta; outcome recorded on its breaker."""

    def __init__(self, provider: Provider, breaker: Breaker | None, trial: bool,
                 first: str | StreamEnd, rest: Iterator[str | StreamEnd], started: float) -> None:
        self.provider = provider
        self.breaker = breaker
        self.trial = trial
        self.first = first
        self.rest = rest
        self.end: StreamEnd | None = None
        self.started = started

    def __iter__(self) -> Iterator[str]:
        """Yield text deltas; afterwards self.end holds the usage counts."""
        try:
            item = self.first
            while True:
                if isinstance(item, StreamEnd):
                    self.end = item
                    break
                yield item
                item = next(self.rest)
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):  # closed early: no verdict on the provider
                self.rest.close()  # type: ignore[attr-defined]
            else:
                record_failure(self.provider, exc, self.started)
            if self.breaker:
                self.breaker.record(self.trial, exc)
            raise
        if self.breaker:
            self.breaker.record(self.trial)
        record_ai_call(self.provider.name, self.provider.model, "ok", time.perf_counter() - self.started,
                       self.end.tokens_in if self.end else 0, self.end.tokens_out if self.end else 0)


def open_stream(messages: list[ChatMessage], route: Sequence[Provider] | None = None,
                options: Options | None = None) -> AnswerStream:
    """Start streaming from the first provider of route that produces a first delta (fallback happens only here)."""
    errors: list[str] = []
    for provider in route or providers.all():
        breaker = breaker_for(provider)
        started = time.perf_counter()
        try:
            trial = breaker.allow() if breaker else False
        except CircuitBreakerError as exc:
            errors.append(describe(provider, exc))
            record_failure(provider, exc, started)
            continue
        rest = provider.stream(messages, options)
        try:
            first = next(rest)
        except Exception as exc:  # noqa: BLE001 - before the first delta, any error means: next provider
            errors.append(describe(provider, exc))
            log.warning("[AI] %s failed before streaming (%s); trying the next provider",
                        provider.name, type(exc).__name__)
            record_failure(provider, exc, started)
            if breaker:
                breaker.record(trial, exc)
            continue
        return AnswerStream(provider, breaker, trial, first, rest, started)
    raise ProvidersUnavailable(retry_after(), errors)
