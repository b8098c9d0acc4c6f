"""AI providers spoken to with the official openai SDK: OpenAI, Gemini and Anthropic through
their OpenAI-compatible endpoints, and any other compatible server (Ollama, vLLM)."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import Iterator

import httpx2
import openai
from openai import Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from luca.ai.base import ChatMessage, Completion, Options, StreamEnd, estimate_tokens

log = logging.getLogger(__name__)

# Statuses that say the provider (or our key with it) is unusable right now.
PROVIDER_FAULT_STATUSES = {401, 403, 408, 429}


class IncompleteStream(Exception):
    """The provider's stream stopped without saying the answer was finished."""


def is_provider_failure(exc: BaseException) -> bool:
    """Whether an error counts against the provider's breaker.

    Timeouts, connection errors, a broken stream, 401/403 (the key is unusable), 429 and
    5xx do; a 400/404/422 caused by our own request does not.
    """
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in PROVIDER_FAULT_STATUSES or exc.status_code >= 500
    return isinstance(exc, Exception)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every provider's HTTP client (the SDK's defaults), made once a process.

    Loading the CA certificates takes about 36 ms, and create_app builds every provider's client.
    """
    return httpx2.create_ssl_context()


class HttpClient(openai.DefaultHttpxClient):  # type: ignore[misc,valid-type]
    """The SDK's default HTTP client on the process's TLS context; closed when collected, as the SDK's own is."""

    def __init__(self) -> None:
        super().__init__(verify=tls_context())

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                self.close()


WARM_UP_ANSWER = {"id": "warm-up", "object": "chat.completion", "created": 0, "model": "warm-up",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "ok"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
WARM_UP_CHUNK = {"id": "warm-up", "object": "chat.completion.chunk", "created": 0, "model": "warm-up",
                 "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def canned(request: httpx2.Request) -> httpx2.Response:
    """The warm-up's answer to any request: a whole completion, or one chunk and [DONE] when streamed."""
    if b'"stream":true' in request.content.replace(b" ", b""):
        events = f"data: {json.dumps(WARM_UP_CHUNK)}\n\ndata: [DONE]\n\n"
        return httpx2.Response(200, content=events.encode(), headers={"content-type": "text/event-stream"})
    return httpx2.Response(200, json=WARM_UP_ANSWER)


@functools.cache
def warm_sdk() -> None:
    """Send one whole and one streamed request through the SDK, answered in memory, once a process.

    The SDK builds its response parsers and imports its modules on first use (about 30 ms); done in
    create_app, that is before gunicorn forks its workers (preload), not in someone's first answer.
    """
    http = httpx2.Client(transport=httpx2.MockTransport(canned))
    requests_log = logging.getLogger("httpx2")  # it logs every request at INFO: not these two
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    try:
        with openai.OpenAI(base_url="http://warm-up.invalid/v1", api_key="warm-up", max_retries=0,
                           http_client=http) as client:
            body = {"model": "warm-up", "messages": [{"role": "user", "content": "warm up"}]}
            client.post("/chat/completions", cast_to=ChatCompletion, body=body)
            with client.post("/chat/completions", cast_to=ChatCompletion, body={**body, "stream": True},
                             stream=True, stream_cls=Stream[ChatCompletionChunk]) as stream:
                for _ in stream:
                    pass
    finally:
        requests_log.setLevel(level)


class OpenAICompatibleProvider:
    """A chat-completions endpoint reached through the openai SDK, with timeouts and no SDK retries."""

    def __init__(self, name: str, *, base_url: str, api_key: str, model: str,
                 timeout: float, connect_timeout: float, max_tokens: int) -> None:
        self.name = name
        self.model = model
        self.max_tokens = max_tokens
        # Retries are the breaker's and the fallback chain's job, not the SDK's.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "missing", max_retries=0,
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            http_client=HttpClient(),
        )

    def request_body(self, messages: list[ChatMessage], options: Options | None = None,
                     **extra: object) -> dict[str, object]:
        """The chat-completions request.

        It is sent with the SDK's client.post() rather than chat.completions.create(): the
        latter re-validates every message against the SDK's TypedDict unions, which cost
        more CPU than the rest of the request (3 ms for 20 messages, measured in bench).
        Errors, auth, timeouts and response types are the SDK's either way.
        """
        body: dict[str, object] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, **extra}
        if options:  # a client's own max_tokens never goes above AI_MAX_OUTPUT_TOKENS
            if "max_tokens" in options:
                body["max_tokens"] = min(options["max_tokens"], self.max_tokens)
            if "temperature" in options:
                body["temperature"] = options["temperature"]
        return body

    def complete(self, messages: list[ChatMessage], options: Options | None = None) -> Completion:
        """Ask for the whole answer at once."""
        started = time.perf_counter()
        response = self.client.post("/chat/completions", cast_to=ChatCompletion,
                                    body=self.request_body(messages, options))
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return Completion(
            text=text,
            provider=self.name,
            model=response.model or self.model,
            tokens_in=usage.prompt_tokens if usage else sum(estimate_tokens(m["content"]) for m in messages),
            tokens_out=usage.completion_tokens if usage else estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )

    def stream(self, messages: list[ChatMessage], options: Options | None = None) -> Iterator[str | StreamEnd]:
        """Yield the answer's text deltas as they arrive, then the usage counts."""
        stream = self.client.post(
            "/chat/completions", cast_to=ChatCompletion, stream=True, stream_cls=Stream[ChatCompletionChunk],
            body=self.request_body(messages, options, stream=True, stream_options={"include_usage": True}))
        tokens_in = tokens_out = 0
        produced: list[str] = []
        finished = False
        with stream:
            for chunk in stream:
                if chunk.usage:
                    tokens_in, tokens_out = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    finished = finished or bool(choice.finish_reason)
                    if choice.delta and choice.delta.content:
                        produced.append(choice.delta.content)
                        yield choice.delta.content
        if not finished:
            raise IncompleteStream(f"{self.name} ended the stream before the answer was finished")
        text = "".join(produced)
        yield StreamEnd(tokens_in=tokens_in or sum(estimate_tokens(m["content"]) for m in messages),
                        tokens_out=tokens_out or estimate_tokens(text))
