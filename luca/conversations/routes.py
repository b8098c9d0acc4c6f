"""REST endpoints for the signed-in user's profile, conversations, messages and search."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, current_app, request
from pybreaker import CircuitBreakerError
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from luca import search
from luca.ai.base import ChatMessage
from luca.ai.context import Passage, build_context
from luca.auth import current_user
from luca.cache import cache_key
from luca.conversations import answers, bp, endpoint, service
from luca.conversations.files import documents_context
from luca.errors import APIError, is_database_unavailable, rollback_quietly
from luca.extensions import cache
from luca.limits import rate_limit
from luca.models import Conversation, Message
from luca.schemas import (
    ANSWER_EVENTS,
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
    if cache.disabled:
        return json_response(build().model_dump_json(), "disabled")
    key, body = cache.get_for_user(kind, user_id, *parts)
    if body is not None:
        return json_response(body, "hit")
    stale_key = cache_key("stale", kind, user_id, *parts)
    try:
        body = build().model_dump_json()
    except (SQLAlchemyError, CircuitBreakerError) as exc:
        if keep_stale and (isinstance(exc, CircuitBreakerError) or is_database_unavailable(exc)):
            stale = cache.get(stale_key)
            if stale is not None:
                rollback_quietly()
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
def list_messages(conversation_id: uuid.UUID, query: MessageListQuery) -> Response:
    """A conversation's messages, a page at a time (newest first unless order=asc)."""
    user_id = current_user().id

    def build() -> MessagePage:
        items, next_cursor = service.message_page(user_id, conversation_id, limit=query.limit,
                                                  cursor=query.cursor, descending=query.order == "desc")
        return MessagePage(items=[MessageOut.model_validate(m) for m in items], next_cursor=next_cursor)

    parts = (conversation_id, hash_parts((query.limit, query.cursor or "", query.order)))
    return cached_for_user("messages", user_id, parts, build)


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


def context_for(conversation: Conversation, history: Sequence[Message | service.Turn],
                question: str) -> tuple[list[ChatMessage], list[str], list[Passage]]:
    """The messages sent to the provider (documents' passages, earlier complete turns, the question), the
    documents' inputs for the deduplication key, and the passages the answer may cite."""
    turns = [(m.role, m.content) for m in history if m.status == "complete"]
    documents, digests, passages = documents_context(conversation, question, [c for _, c in turns[-2:]])
    return build_context([*turns, ("user", question)], documents=documents), digests, passages


def wants_cache(body: MessageCreate | RetryRequest) -> bool:
    """False when the client asked to skip the answer cache ("cache": false or Cache-Control: no-cache)."""
    return body.cache and not request.cache_control.no_cache


@bp.post("/conversations/<uuid:conversation_id>/messages")
@rate_limit("messages")
@endpoint(body=MessageCreate, response=Exchange, status=201, errors=(400, 413, 415, 422, 429, 503),
          events=ANSWER_EVENTS,
          events_description="With stream: true, Server-Sent Events: start, delta..., end or error")
def send_message(conversation_id: uuid.UUID, body: MessageCreate) -> Any:
    """Ask a question: it is stored, the AI answers (whole, or streamed with stream: true)."""
    content = question_text(body)
    conversation, history = service.load_for_answer(current_user().id, conversation_id)

    def answer() -> Any:
        question = service.add_question(conversation, content)
        context, digests, passages = context_for(conversation, history, content)
        return answers.respond(conversation, question, context, digests, stream=body.stream,
                               use_cache=wants_cache(body), passages=passages)

    return answers.within_slot(conversation.user_id, answer)


@bp.post("/conversations/<uuid:conversation_id>/messages/<int:message_id>/retry")
@rate_limit("messages")
@endpoint(body=RetryRequest, optional_body=True, response=Exchange, status=201, errors=(400, 415, 422, 429, 503),
          events=ANSWER_EVENTS, events_description="With stream: true, Server-Sent Events as for sending a message")
def retry_message(conversation_id: uuid.UUID, message_id: int, body: RetryRequest) -> Any:
    """Ask again for an answer to a stored question (after a 503, or to get a fresh answer)."""
    conversation, question, history = service.load_for_retry(current_user().id, conversation_id, message_id)

    def answer() -> Any:
        context, digests, passages = context_for(conversation, history, question.content)
        return answers.respond(conversation, question, context, digests, stream=body.stream,
                               use_cache=wants_cache(body), passages=passages)

    return answers.within_slot(conversation.user_id, answer)


@bp.get("/search")
@endpoint(query=SearchQuery, response=SearchResults, errors=(422,))
def search_messages(query: SearchQuery) -> Response:
    """Full-text search over the user's conversation titles and messages, best first."""
    user_id = current_user().id

    def build() -> SearchResults:
        hits = search.search(user_id, query.q, query.limit)
        return SearchResults(query=query.q, items=[SearchHit.model_validate(h.fields()) for h in hits])

    return cached_for_user("search", user_id, (hash_parts((query.q, query.limit)),), build)
