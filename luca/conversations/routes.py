"""REST endpoints for the signed-in user's profile, conversations, messages and search."""
from __future__ import annotations

import uuid

from flask import current_app

from luca import search
from luca.ai import chain
from luca.ai.context import build_context
from luca.api import endpoint
from luca.auth import current_user
from luca.conversations import bp, service
from luca.errors import APIError
from luca.models import Message
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
    SearchHit,
    SearchQuery,
    SearchResults,
    UserOut,
)


@bp.get("/me")
@endpoint(response=UserOut)
def me() -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(current_user())


@bp.get("/conversations")
@endpoint(query=ConversationListQuery, response=ConversationPage, errors=(400, 422))
def list_conversations(query: ConversationListQuery) -> ConversationPage:
    """The user's conversations, pinned first then newest activity, a page at a time."""
    items, next_cursor = service.conversation_page(
        current_user().id, limit=query.limit, cursor=query.cursor, metadata=query.metadata, q=query.q)
    return ConversationPage(items=[ConversationOut.model_validate(c) for c in items], next_cursor=next_cursor)


@bp.post("/conversations")
@endpoint(body=ConversationCreate, response=ConversationOut, status=201, errors=(400, 413, 415, 422))
def create_conversation(body: ConversationCreate) -> ConversationOut:
    """Start a conversation."""
    conversation = service.create_conversation(current_user().id, body.title, body.metadata)
    return ConversationOut.model_validate(conversation)


@bp.get("/conversations/<uuid:conversation_id>")
@endpoint(response=ConversationOut)
def get_conversation(conversation_id: uuid.UUID) -> ConversationOut:
    """One of the user's conversations."""
    return ConversationOut.model_validate(service.get_conversation(current_user().id, conversation_id))


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


def context_for(history: list[Message], question: str) -> list:
    """The messages sent to the provider: earlier complete turns, then the question."""
    turns = [(m.role, m.content) for m in history if m.status == "complete"]
    return build_context([*turns, ("user", question)])


@bp.post("/conversations/<uuid:conversation_id>/messages")
@endpoint(body=MessageCreate, response=Exchange, status=201, errors=(400, 413, 415, 422, 503))
def send_message(conversation_id: uuid.UUID, body: MessageCreate) -> Exchange:
    """Ask a question: the question is stored, the AI answers, and both are returned."""
    content = question_text(body)
    conversation, history = service.load_for_answer(current_user().id, conversation_id)
    question = service.add_question(conversation, content)
    completion = chain.answer(context_for(history, content))
    answer = service.add_answer(conversation, completion)
    return Exchange(message=MessageOut.model_validate(question), answer=MessageOut.model_validate(answer))


@bp.get("/search")
@endpoint(query=SearchQuery, response=SearchResults, errors=(422,))
def search_messages(query: SearchQuery) -> SearchResults:
    """Full-text search over the user's conversation titles and messages, best first."""
    hits = search.search(current_user().id, query.q, query.limit)
    return SearchResults(query=query.q, items=[SearchHit.model_validate(h, from_attributes=True) for h in hits])
