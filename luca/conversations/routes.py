"""REST endpoints for the signed-in user's profile, conversations, messages and search."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from flask import Response, request
from pydantic import BaseModel

from luca import budgets, search
from luca.ai.base import ChatMessage
from luca.ai.context import Passage, build_context
from luca.auth import current_user
from luca.conversations import answers, bp, endpoint, service
from luca.conversations.documents import documents_context
from luca.cache import Uncached, json_response
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


@bp.get("/conversations")
@endpoint(query=ConversationListQuery, response=ConversationPage, errors=(400, 422))
def list_conversations(query: ConversationListQuery) -> Response:
    """The user's conversations, pinned first then newest activity, a page at a time (shared=true: colleagues')."""
    user_id = current_user().id

    def build() -> ConversationPage:
        items, next_cursor = service.conversation_page(
            user_id, limit=query.limit, cursor=query.cursor, metadata=query.metadata, q=query.q,
            shared=bool(query.shared))
        return ConversationPage(items=[ConversationOut.model_validate(c) for c in items], next_cursor=next_cursor)

    if query.shared:  # never cached: an owner's unsharing must show at once, and it changes no version of ours
        return json_response(build().model_dump_json(), "bypass")

    parts = (query.limit, query.cursor or "", query.q or "", query.metadata or "")
    return cache.cached_for_user("conversations", user_id, (hash_parts(parts),), build, keep_stale=True)


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
    """One of the user's conversations, or one a colleague shared."""
    user_id = current_user().id

    def build() -> BaseModel | Uncached:
        conversation = service.conversation_access(user_id, conversation_id, write=False)
        body = ConversationOut.model_validate(conversation)
        return Uncached(body=body) if service.shared_with_me(conversation, user_id) else body

    return cache.cached_for_user("conversation", user_id, (conversation_id,), build)


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

    def build() -> BaseModel | Uncached:
        items, next_cursor = service.message_page(user_id, conversation_id, limit=query.limit,
                                                  cursor=query.cursor, descending=query.order == "desc")
        page = MessagePage(items=[MessageOut.model_validate(m) for m in items], next_cursor=next_cursor)
        return Uncached(body=page) if any(m.user_id != user_id for m in items) else page

    parts = (conversation_id, hash_parts((query.limit, query.cursor or "", query.order)))
    return cache.cached_for_user("messages", user_id, parts, build)


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
    content = body.content  # trimmed and within MAX_MESSAGE_CHARS (schemas.MessageCreate)
    conversation, history = service.load_for_answer(current_user().id, conversation_id)

    def answer() -> Any:
        context, digests, passages = context_for(conversation, history, content)
        budgets.reserve_answer(conversation.user_id, context, digests, wants_cache(body))  # before anything is stored
        question = service.add_question(conversation, content)
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
        budgets.reserve_answer(conversation.user_id, context, digests, wants_cache(body))
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

    return cache.cached_for_user("search", user_id, (hash_parts((query.q, query.limit)),), build)
