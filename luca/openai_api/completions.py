"""Answering a chat completion: the client's messages through Luca's limits, dedup, breakers and fallback.

What a door adds to the answer service is translation: the client's messages become the context
(after Luca's system prompt), the answer becomes a chat.completion or chunks. Nothing is stored
unless the request names a conversation (X-Luca-Conversation: new, or an id of the user's): then
the last question and its answer are stored there with luca.conversations.service, and titled.
Either way the answer is recorded in usage under SOURCE (an unstored one as a usage record), and
its cost is reserved and settled by luca.budgets exactly as for the REST API.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from flask import Response, current_app, request, stream_with_context

from luca import budgets
from luca.ai import chain
from luca.ai.base import ChatMessage, Completion, Options, Provider, estimate_tokens
from luca.ai.chain import AnswerStream, ProvidersUnavailable
from luca.ai.context import system_prompt
from luca.ai.dedup import Deduplicator, ReplayStream, answer_key, sharing_scope
from luca.auth import CurrentUser
from luca.conversations import service
from luca.conversations.answers import within_slot
from luca.errors import APIError, not_found
from luca.extensions import cache, dedup, providers
from luca.conversations.titles import enqueue_title
from luca.models import Conversation
from luca.openai_api.errors import invalid
from luca.openai_api.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorObject,
    ErrorResponse,
    Usage,
)

log = logging.getLogger(__name__)

SOURCE = "openai-api"  # what usage records these answers under (see record_answer)
CONVERSATION_HEADER = "X-Luca-Conversation"


def model_id(provider: str, model: str) -> str:
    """The id a client asks for to reach one provider alone: <provider>/<model>."""
    return f"{provider}/{model}"


def answered_as(route: Sequence[Provider], provider: str, model: str) -> str:
    """The model id of who answered, as GET /v1/models lists it (a provider may report a dated model name)."""
    configured = next((p for p in route if p.name == provider), None)
    return model_id(provider, configured.model if configured else model)


def resolve_route(model: str) -> list[Provider]:
    """The providers a model id names: "luca" is the whole fallback chain, "<provider>/<model>" one of them."""
    route = providers.all()
    if model == "luca":
        return route
    chosen = [p for p in route if model_id(p.name, p.model) == model]
    if not chosen:
        raise invalid(f"the model '{model}' does not exist; GET /v1/models lists them", "model",
                      code="model_not_found", status=404)
    return chosen


def request_context(body: ChatCompletionRequest) -> tuple[list[ChatMessage], bool]:
    """Luca's system prompt, then the client's messages as text; and whether they are one user question alone.

    Only such a request may be shared with other users (sharing_scope); a client's own system
    prompt or history may hold anything, so anything else stays the user's.
    """
    messages: list[ChatMessage] = [{"role": "system", "content": system_prompt()}]
    for message in body.messages:
        messages.append({"role": "system" if message.role == "developer" else message.role,
                         "content": message.text()})
    if not any(m.role == "user" for m in body.messages):
        raise invalid("messages must hold at least one user message", "messages")
    budget = current_app.config["AI_CONTEXT_TOKENS"]
    if (tokens := sum(estimate_tokens(m["content"]) for m in messages)) > budget:
        raise invalid(f"the messages come to about {tokens} tokens; Luca's context limit is {budget}",
                      "messages", code="context_length_exceeded")
    return messages, len(body.messages) == 1 and body.messages[0].role == "user"


def options_of(body: ChatCompletionRequest) -> Options:
    """The call options the client set (max_completion_tokens is the newer name of max_tokens)."""
    options: Options = {}
    if (limit := body.max_completion_tokens or body.max_tokens) is not None:
        options["max_tokens"] = limit
    if body.temperature is not None:
        options["temperature"] = body.temperature
    return options


def stored_question(context: list[ChatMessage]) -> str:
    """The last user message, trimmed: what is stored when the request names a conversation, within MAX_MESSAGE_CHARS.

    The REST API refuses a longer question (content_too_long); a conversation reached through /v1
    holds nothing the REST API could not have stored. An unstored request is bounded by the context.
    """
    question = next(m for m in reversed(context) if m["role"] == "user")["content"].strip()
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if request.headers.get(CONVERSATION_HEADER, "").strip():
        if not question:
            raise invalid("the last user message is blank; a stored question must have text", "messages")
        if len(question) > limit:
            raise invalid(f"the last user message is {len(question)} characters; a stored question's limit "
                          f"(MAX_MESSAGE_CHARS) is {limit}", "messages", code="content_too_long")
    return question


def wanted_conversation(user_id: int) -> Callable[[], Conversation | None]:
    """The conversation the request asks to store the exchange in, checked now and created only when used."""
    wanted = request.headers.get(CONVERSATION_HEADER, "").strip()
    if not wanted:
        return lambda: None
    if wanted.lower() == "new":
        return lambda: service.create_conversation(user_id, None, None)
    try:
        conversation_id = uuid.UUID(wanted)
    except ValueError:
        raise not_found("conversation") from None
    conversation = service.get_conversation(user_id, conversation_id)
    return lambda: conversation


# -- budgets and usage: the REST API's engine ------------------------------------------------------
def reserve_budget(user: CurrentUser, route: Sequence[Provider], context: list[ChatMessage], options: Options,
                   deduplicator: Deduplicator | None, key: str) -> None:
    """Before anything is stored or a provider asked: reserve the call's worst-case cost until the request ends.

    budgets.reserve_for_request, as the REST send does: 429 budget_exceeded when the member's or
    the organisation's budget has no room for it, unless deduplication holds the answer (it costs
    nothing and is always served). The reservation is settled when the request ends (after a
    streamed answer's last event) with what record_answer() recorded.
    """
    def free() -> bool:
        return deduplicator is not None and deduplicator.cached(key) is not None

    budgets.reserve_for_request(user.id, context, free, route=route, max_tokens=options.get("max_tokens"))


def record_answer(user: CurrentUser, conversation: Conversation | None, completion: Completion, cached: bool,
                  status: str = "complete") -> None:
    """Record the answer in usage under SOURCE: stored in its conversation, or as a usage record when there is none."""
    if conversation is not None:
        service.add_answer(conversation, completion, status=status, cached=cached, source=SOURCE)
    else:
        budgets.record_unstored(user.id, SOURCE, completion.provider, completion.model, completion.tokens_in,
                                completion.tokens_out, cached)


# -- answering -------------------------------------------------------------------------------------
def unavailable(exc: ProvidersUnavailable) -> APIError:
    """The 503 for 'no provider of the route can answer'."""
    return APIError(503, "providers_unavailable", "no AI provider can answer right now; try again later",
                    headers={"Retry-After": str(exc.retry_after)})


def usage_of(completion: Completion) -> Usage:
    """A completion's tokens as OpenAI's usage."""
    return Usage(prompt_tokens=completion.tokens_in, completion_tokens=completion.tokens_out,
                 total_tokens=completion.tokens_in + completion.tokens_out)


def headers_for(conversation: Conversation | None, cached: bool) -> dict[str, str]:
    """Where the exchange was stored, and whether the answer came from deduplication."""
    headers = {"X-Cache": "hit" if cached else "miss"}
    if conversation is not None:
        headers[CONVERSATION_HEADER] = str(conversation.id)
    return headers


def answer(body: ChatCompletionRequest, user: CurrentUser) -> Any:
    """Answer the request, whole (a chat.completion) or streamed (chunks, then data: [DONE])."""
    route = resolve_route(body.model)
    context, shareable = request_context(body)
    options = options_of(body)
    conversation_of = wanted_conversation(user.id)
    use_cache = not cache.disabled and not request.cache_control.no_cache
    deduplicator = dedup.of() if use_cache else None
    key = answer_key(route, context, user.id, scope=sharing_scope(user) if shareable else "user",
                     options=options) if deduplicator else ""
    question = stored_question(context)

    def respond() -> Any:
        reserve_budget(user, route, context, options, deduplicator, key)  # before anything is stored
        conversation = conversation_of()
        if conversation is not None:
            service.add_question(conversation, question, source=SOURCE)
        if body.stream:
            return stream(body, user, route, context, options, conversation, deduplicator, key)
        started = time.perf_counter()

        def call() -> Completion:
            return chain.answer(context, route, options)

        try:
            completion, cached = deduplicator.answer(key, call) if deduplicator else (call(), False)
        except ProvidersUnavailable as exc:
            raise unavailable(exc) from None
        if cached:
            completion = replace(completion, latency_ms=int((time.perf_counter() - started) * 1000))
        record_answer(user, conversation, completion, cached)
        if conversation is not None:
            enqueue_title(conversation)
        result = ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                                model=answered_as(route, completion.provider, completion.model),
                                choices=[Choice(message=AssistantMessage(content=completion.text))],
                                usage=usage_of(completion))
        return Response(result.model_dump_json(), mimetype="application/json",
                        headers=headers_for(conversation, cached))

    return within_slot(user.id, respond)  # the REST API's answer slots: one cap for both doors


def chunk_event(chunk: ChatCompletionChunk, with_usage: bool = False) -> str:
    """One Server-Sent Event of a streamed answer; with include_usage every chunk has usage (null but the last)."""
    data = chunk.model_dump(exclude_none=True)
    if with_usage:
        data.setdefault("usage", None)
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def stream(body: ChatCompletionRequest, user: CurrentUser, route: Sequence[Provider], context: list[ChatMessage],
           options: Options, conversation: Conversation | None, deduplicator: Deduplicator | None,
           key: str) -> Response:
    """Stream the answer as chat.completion.chunk events; fallback only before the first chunk."""
    hit, leader = deduplicator.begin(key) if deduplicator else (None, False)
    source: AnswerStream | ReplayStream
    if hit:
        source = ReplayStream(hit)
    else:
        try:
            source = chain.open_stream(context, route, options)
        except BaseException as exc:
            if leader and deduplicator:  # waiting twins must not wait for a stream that never began
                deduplicator.finish(key)
            if isinstance(exc, ProvidersUnavailable):
                raise unavailable(exc) from None
            raise
    cached = hit is not None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": answered_as(route, source.provider.name, source.provider.model)}
    started = time.perf_counter()

    def completion_of(parts: list[str]) -> Completion:
        end, text = source.end, "".join(parts)
        return Completion(text=text, provider=source.provider.name, model=source.provider.model,
                          tokens_in=end.tokens_in if end else sum(estimate_tokens(m["content"]) for m in context),
                          tokens_out=end.tokens_out if end else estimate_tokens(text),
                          latency_ms=int((time.perf_counter() - started) * 1000))

    @stream_with_context
    def events() -> Iterator[str]:
        parts: list[str] = []
        finished: Completion | None = None
        deltas = iter(source)
        try:
            first = ChunkChoice(delta=Delta(role="assistant", content=""))
            yield chunk_event(ChatCompletionChunk(**base, choices=[first]), include_usage)
            for delta in deltas:
                parts.append(delta)
                yield chunk_event(ChatCompletionChunk(**base, choices=[ChunkChoice(delta=Delta(content=delta))]),
                                  include_usage)
            finished = completion_of(parts)
            if deduplicator and not cached:
                deduplicator.store(key, finished)  # before finish(): waiting twins read it as they wake
        except Exception as exc:  # noqa: BLE001 - the provider broke off after the first chunk: no fallback now
            log.warning("[AI] %s stream broke off (%s)", source.provider.name, type(exc).__name__)
            error = ErrorObject(message="the answer was cut off by the AI provider", type="server_error",
                                code="stream_interrupted")
            yield f"data: {ErrorResponse(error=error).model_dump_json()}\n\n"
        finally:
            close = getattr(deltas, "close", None)
            if close:
                close()
            if leader and deduplicator:
                deduplicator.finish(key)
            record_answer(user, conversation, finished or completion_of(parts), cached,
                          "complete" if finished else "incomplete")
        if finished is None:
            return
        if conversation is not None:
            enqueue_title(conversation)
        last = ChunkChoice(delta=Delta(), finish_reason="stop")
        yield chunk_event(ChatCompletionChunk(**base, choices=[last]), include_usage)
        if include_usage:
            yield chunk_event(ChatCompletionChunk(**base, choices=[], usage=usage_of(finished)))
        yield "data: [DONE]\n\n"

    return Response(events(), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                             **headers_for(conversation, cached)})
