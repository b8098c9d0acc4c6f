"""REST endpoints for the signed-in user's profile, conversations, messages and search."""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import replace
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, request, stream_with_context
from pybreaker import CircuitBreakerError
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from luca import search
from luca.ai import chain
from luca.ai.base import ChatMessage, Completion, estimate_tokens
from luca.ai.chain import AnswerStream, ProvidersUnavailable
from luca.ai.dedup import Deduplicator, ReplayStream, answer_key, get_deduplicator
from luca.ai.context import build_context
from luca.api import endpoint
from luca.auth import current_user
from luca.cache import cache_key, get_cache
from luca.conversations import bp, service
from luca.errors import APIError, is_database_unavailable
from luca.extensions import db
from luca.models import Conversation, Message
from luca.schemas import (
    ConversationCreate,
    ConversationListQuery,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    Exchange,
    MessageCreate,
    MessageListQuery,
    MessageOut,
    MessagePage,
    RetryRequest,
    SearchHit,
    SearchQuery,
    SearchResults,
    UserOut,
)

log = logging.getLogger(__name__)


@bp.get("/me")
@endpoint(response=UserOut)
def me() -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(current_user())


def json_response(body: str, cache_status: str, status: int = 200) -> Response:
    """A JSON body that is already serialised, with its X-Cache status."""
    return Response(body, status=status, mimetype="application/json", headers={"X-Cache": cache_status})


def cached_for_user(kind: str, user_id: int, parts: tuple[Any, ...], build: Callable[[], BaseModel],
                    keep_stale: bool = False) -> Response:
    """Serve a per-user JSON body from the cache, or build, cache and serve it.

    With keep_stale, a copy outlives the fresh one and is served (X-Cache: stale) when
    the database cannot be reached.
    """
    cache = get_cache()
    if cache.disabled:
        return json_response(build().model_dump_json(), "disabled")
    key = cache_key(kind, user_id, f"v{cache.user_version(user_id)}", *parts)
    body = cache.get(key)
    if body is not None:
        return json_response(body, "hit")
    stale_key = cache_key("stale", kind, user_id, *parts)
    try:
        body = build().model_dump_json()
    except (SQLAlchemyError, CircuitBreakerError) as exc:
        if keep_stale and (isinstance(exc, CircuitBreakerError) or is_database_unavailable(exc)):
            stale = cache.get(stale_key)
            if stale is not None:
                db.session.rollback()
                return json_response(stale, "stale")
        raise
    cache.set(key, body)
    if keep_stale:
        cache.set(stale_key, body, ttl=current_app.config["CACHE_STALE_TTL"])
    return json_response(body, "miss")


@bp.get("/conversations")
@endpoint(query=ConversationListQuery, response=ConversationPage, errors=(400, 422))
def list_conversations(query: ConversationListQuery) -> Response:
    """The user's conversations, pinned first then newest activity, a page at a time."""
    user_id = current_user().id

    def build() -> ConversationPage:
        items, next_cursor = service.conversation_page(
            user_id, limit=query.limit, cursor=query.cursor, metadata=query.metadata, q=query.q)
        return ConversationPage(items=[ConversationOut.model_validate(c) for c in items], next_cursor=next_cursor)

    parts = (query.limit, query.cursor or "", query.q or "", query.metadata or "")
    return cached_for_user("conversations", user_id, (hash_parts(parts),), build, keep_stale=True)


def hash_parts(parts: tuple[Any, ...]) -> str:
    """A short stable digest of request parameters, for use inside a cache key."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


@bp.post("/conversations")
@endpoint(body=ConversationCreate, response=ConversationOut, status=201, errors=(400, 413, 415, 422))
def create_conversation(body: ConversationCreate) -> ConversationOut:
    """Start a conversation."""
    conversation = service.create_conversation(current_user().id, body.title, body.metadata)
    return ConversationOut.model_validate(conversation)


@bp.get("/conversations/<uuid:conversation_id>")
@endpoint(response=ConversationOut)
def get_conversation(conversation_id: uuid.UUID) -> Response:
    """One of the user's conversations."""
    user_id = current_user().id
    return cached_for_user("conversation", user_id, (conversation_id,), lambda: ConversationOut.model_validate(
        service.get_conversation(user_id, conversation_id)))


@bp.patch("/conversations/<uuid:conversation_id>")
@endpoint(body=ConversationUpdate, response=ConversationOut, errors=(400, 413, 415, 422))
def update_conversation(conversation_id: uuid.UUID, body: ConversationUpdate) -> ConversationOut:
    """Rename (a null title hands naming back to Luca), pin or unpin, or replace the metadata."""
    conversation = service.get_conversation(current_user().id, conversation_id)
    changes = body.model_dump(include=body.model_fields_set)
    return ConversationOut.model_validate(service.update_conversation(conversation, changes))


@bp.delete("/conversations/<uuid:conversation_id>")
@endpoint(status=204)
def delete_conversation(conversation_id: uuid.UUID) -> tuple[str, int]:
    """Delete a conversation and all its messages."""
    service.delete_conversation(current_user().id, conversation_id)
    return "", 204


@bp.get("/conversations/<uuid:conversation_id>/messages")
@endpoint(query=MessageListQuery, response=MessagePage, errors=(400, 422))
def list_messages(conversation_id: uuid.UUID, query: MessageListQuery) -> MessagePage:
    """A conversation's messages, a page at a time (newest first unless order=asc)."""
    items, next_cursor = service.message_page(current_user().id, conversation_id, limit=query.limit,
                                              cursor=query.cursor, descending=query.order == "desc")
    return MessagePage(items=[MessageOut.model_validate(m) for m in items], next_cursor=next_cursor)


def question_text(body: MessageCreate) -> str:
    """The question, trimmed and within the configured length."""
    content = body.content.strip()
    if not content:
        raise APIError(422, "validation_error", "content must not be blank",
                       [{"field": "content", "message": "must not be blank"}])
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if len(content) > limit:
        raise APIError(422, "content_too_long", f"content is {len(content)} characters; the limit is {limit}",
                       [{"field": "content", "message": f"at most {limit} characters"}])
    return content


def context_for(history: list[Message], question: str) -> list[ChatMessage]:
    """The messages sent to the provider: earlier complete turns, then the question."""
    turns = [(m.role, m.content) for m in history if m.status == "complete"]
    return build_context([*turns, ("user", question)])


def unavailable(exc: ProvidersUnavailable, question: Message) -> APIError:
    """The 503 for 'no provider can answer': the question is kept and can be retried."""
    return APIError(
        503, "providers_unavailable",
        "no AI provider can answer right now; your message is saved, retry it later",
        details={"message_id": question.id,
                 "retry": f"/api/conversations/{question.conversation_id}/messages/{question.id}/retry"},
        headers={"Retry-After": str(exc.retry_after)})


def respond(conversation: Conversation, question: Message, context: list[ChatMessage], *,
            stream: bool, use_cache: bool) -> Any:
    """Answer a stored question, whole (201 JSON) or streamed (Server-Sent Events).

    Unless the client opted out, identical contexts are answered once (see luca.ai.dedup).
    """
    dedup = get_deduplicator() if use_cache and not get_cache().disabled else None
    key = answer_key(chain.providers(), context, conversation.user_id) if dedup else ""
    if stream:
        return stream_response(conversation, question, context, dedup, key)
    started = time.perf_counter()
    try:
        if dedup:
            completion, cached = dedup.answer(key, lambda: chain.answer(context))
        else:
            completion, cached = chain.answer(context), False
    except ProvidersUnavailable as exc:
        raise unavailable(exc, question) from None
    if cached:
        completion = replace(completion, latency_ms=int((time.perf_counter() - started) * 1000))
    answer = service.add_answer(conversation, completion, cached=cached)
    return Exchange(message=MessageOut.model_validate(question), answer=MessageOut.model_validate(answer))


def wants_cache(body: MessageCreate | RetryRequest) -> bool:
    """False when the client asked to skip the answer cache ("cache": false or Cache-Control: no-cache)."""
    return body.cache and not request.cache_control.no_cache


def open_answer(context: list[ChatMessage], dedup: Deduplicator | None,
                key: str) -> tuple[AnswerStream | ReplayStream, bool, bool]:
    """A stream of the answer: a stored one replayed, or a provider's. Returns (stream, cached, leader)."""
    leader = False
    if dedup:
        hit = dedup.cached(key)
        if hit:
            dedup.cache.count("dedup.hits")
            return ReplayStream(hit), True, False
        leader = dedup.lead(key)
        if not leader and (hit := dedup.wait_for(key)):
            dedup.cache.count("dedup.waited")
            return ReplayStream(hit), True, False
    try:
        stream = chain.open_stream(context)
    except ProvidersUnavailable:
        if leader and dedup:
            dedup.release(key)
        raise
    if dedup:
        dedup.cache.count("dedup.misses")
    return stream, False, leader


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def message_json(message: Message) -> Any:
    """A message as JSON-ready data."""
    return MessageOut.model_validate(message).model_dump(mode="json")


def stream_response(conversation: Conversation, question: Message, context: list[ChatMessage],
                    dedup: Deduplicator | None, key: str) -> Response:
    """Stream the answer: start, delta..., then end, or error with the partial answer saved as incomplete."""
    try:
        stream, cached, leader = open_answer(context, dedup, key)
    except ProvidersUnavailable as exc:
        raise unavailable(exc, question) from None
    started = time.perf_counter()

    def save(parts: list[str], status: str) -> Message:
        end = stream.end
        text = "".join(parts)
        completion = Completion(
            text=text, provider=stream.provider.name, model=stream.provider.model,
            tokens_in=end.tokens_in if end else sum(estimate_tokens(m["content"]) for m in context),
            tokens_out=end.tokens_out if end else estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000))
        if leader and dedup and status == "complete":
            dedup.store(key, completion)
        return service.add_answer(conversation, completion, status=status, cached=cached)

    @stream_with_context
    def events() -> Iterator[str]:
        parts: list[str] = []
        saved = False
        deltas = iter(stream)
        try:
            yield sse("start", {"conversation_id": str(conversation.id), "message": message_json(question),
                                "provider": stream.provider.name, "model": stream.provider.model,
                                "cached": cached})
            for delta in deltas:
                parts.append(delta)
                yield sse("delta", {"text": delta})
        except Exception as exc:  # noqa: BLE001 - the provider broke off after the first delta
            log.warning("[AI] %s stream broke off (%s)", stream.provider.name, type(exc).__name__)
            saved = True
            partial = save(parts, "incomplete")
            yield sse("error", {"code": "stream_interrupted",
                                "message": "the answer was cut off; the part received is saved as incomplete",
                                "answer": message_json(partial)})
            return
        finally:
            close = getattr(deltas, "close", None)
            if close:
                close()
            if not saved and stream.end is None:  # the client went away mid-answer
                saved = True
                save(parts, "incomplete")
            if leader and dedup:
                dedup.release(key)
        saved = True
        yield sse("end", {"message": message_json(save(parts, "complete"))})

    return Response(events(), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.post("/conversations/<uuid:conversation_id>/messages")
@endpoint(body=MessageCreate, response=Exchange, status=201, errors=(400, 413, 415, 422, 503),
          extra_responses={200: "With stream: true, Server-Sent Events: start, delta..., end or error"})
def send_message(conversation_id: uuid.UUID, body: MessageCreate) -> Any:
    """Ask a question: it is stored, the AI answers (whole, or streamed with stream: true)."""
    content = question_text(body)
    conversation, history = service.load_for_answer(current_user().id, conversation_id)
    question = service.add_question(conversation, content)
    return respond(conversation, question, context_for(history, content), stream=body.stream,
                   use_cache=wants_cache(body))


@bp.post("/conversations/<uuid:conversation_id>/messages/<int:message_id>/retry")
@endpoint(body=RetryRequest, optional_body=True, response=Exchange, status=201, errors=(400, 415, 422, 503),
          extra_responses={200: "With stream: true, Server-Sent Events as for sending a message"})
def retry_message(conversation_id: uuid.UUID, message_id: int, body: RetryRequest) -> Any:
    """Ask again for an answer to a stored question (after a 503, or to get a fresh answer)."""
    conversation, question, history = service.load_for_retry(current_user().id, conversation_id, message_id)
    return respond(conversation, question, context_for(history, question.content), stream=body.stream,
                   use_cache=wants_cache(body))


@bp.get("/search")
@endpoint(query=SearchQuery, response=SearchResults, errors=(422,))
def search_messages(query: SearchQuery) -> SearchResults:
    """Full-text search over the user's conversation titles and messages, best first."""
    hits = search.search(current_user().id, query.q, query.limit)
    return SearchResults(query=query.q, items=[SearchHit.model_validate(h, from_attributes=True) for h in hits])
