"""Reading and writing conversations and messages; every query is scoped to one user.

The one exception is sharing: conversation_access() is the rule (a user's own conversation for
anything, a colleague's shared one for reading), and readable_by() is the same rule as a WHERE clause.
"""
from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from flask import current_app
from sqlalchemy import JSON, Select, and_, bindparam, delete, func, insert, or_, select, tuple_, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by
from sqlalchemy.orm.attributes import set_committed_value

from luca import budgets, pricing, search
from luca.ai.base import Completion
from luca.conversations.titles import hold_title, title_held
from luca.errors import InvalidInput, NotFound, ReadOnly
from luca.extensions import cache, db
from luca.models import Conversation, Membership, Message, utcnow
from luca.pagination import keyset_page
from luca.schemas import json_depth, storable

CONVERSATION_KEYS = (Conversation.pinned, Conversation.updated_at, Conversation.id)
CONVERSATION_KEY_TYPES = (bool, datetime, uuid.UUID)
MESSAGE_KEYS = (Message.created_at, Message.id)
MESSAGE_KEY_TYPES = (datetime, int)
T = TypeVar("T")


def owned(model: type[T], row_id: Any, user_id: int, what: str) -> T:
    """One of the user's rows (a conversation, a file) by its id; NotFound when unknown or someone else's."""
    row = db.session.execute(
        select(model).where(model.id == row_id, model.user_id == user_id)  # type: ignore[attr-defined]
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(what)
    return row


def colleagues_of(user_id: int) -> Any:
    """A subquery: the ids of the users in the user's organisation (none for a user without one)."""
    organisation = select(Membership.organisation_id).where(Membership.user_id == user_id).scalar_subquery()
    return select(Membership.user_id).where(Membership.organisation_id == organisation)


def readable_by(user_id: int) -> Any:
    """WHERE clause of the access rule for reading: the user's own, or shared by someone of their organisation."""
    return or_(Conversation.user_id == user_id,
               and_(Conversation.shared.is_(True), Conversation.user_id.in_(colleagues_of(user_id))))


def conversation_access(user_id: int, conversation_id: uuid.UUID, *, write: bool) -> Conversation:
    """The access rule, in one place: a user may do anything with their own conversation and read one a
    colleague shared; writing to a shared one is 403; anything else (another organisation's, an unshared
    colleague's, an unknown id) is 404."""
    conversation = db.session.execute(
        select(Conversation).where(Conversation.id == conversation_id, readable_by(user_id))
    ).scalar_one_or_none()
    if conversation is None:
        raise NotFound("conversation")
    if write and conversation.user_id != user_id:
        raise ReadOnly("this conversation is shared with you to read; only its owner may change it")
    return conversation


def get_conversation(user_id: int, conversation_id: uuid.UUID) -> Conversation:
    """The user's own conversation, to change; 403 for a colleague's shared one, 404 otherwise."""
    return conversation_access(user_id, conversation_id, write=True)


def refuse_write(user_id: int, conversation_id: uuid.UUID) -> None:
    """After a write found no conversation of the user's own: raise its 403 or 404."""
    conversation_access(user_id, conversation_id, write=True)
    raise NotFound("conversation")


def metadata_filter(raw: str) -> Any:
    """A WHERE clause for 'metadata contains this JSON object' on either database."""
    limit = current_app.config["MAX_METADATA_DEPTH"]
    try:
        wanted = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInput("invalid_metadata_filter", "metadata must be a JSON object") from None
    except RecursionError:
        raise InvalidInput("invalid_metadata_filter", f"metadata nests deeper than the limit of {limit} levels") from None
    if not isinstance(wanted, dict) or not wanted:
        raise InvalidInput("invalid_metadata_filter", "metadata must be a non-empty JSON object")
    if (depth := json_depth(wanted)) > limit:
        raise InvalidInput("invalid_metadata_filter", f"metadata nests {depth} levels deep; the limit is {limit}")
    try:
        storable(wanted)
    except ValueError as exc:
        raise InvalidInput("invalid_metadata_filter", f"metadata {exc}") from None
    if db.engine.dialect.name == "postgresql":
        return type_coerce(Conversation.meta, JSONB).contains(wanted)
    # SQLite has no containment operator: compare each leaf by its JSON path.
    clauses = []
    for path, value in json_leaves(wanted):
        extracted = func.json_extract(Conversation.meta, path)
        if isinstance(value, (dict, list)):
            clauses.append(func.json(extracted) == json.dumps(value, separators=(",", ":")))
        elif isinstance(value, bool):
            clauses.append(func.json_type(Conversation.meta, path) == ("true" if value else "false"))
        elif value is None:
            clauses.append(func.json_type(Conversation.meta, path) == "null")
        else:
            clauses.append(extracted == value)
    return and_(*clauses)


def json_leaves(value: dict[str, Any], prefix: str = "$") -> list[tuple[str, Any]]:
    """The (JSON path, value) pairs of an object's leaves; lists are compared whole."""
    leaves: list[tuple[str, Any]] = []
    for key, item in value.items():
        path = f'{prefix}."{key.replace(chr(34), "")}"'
        if isinstance(item, dict) and item:
            leaves.extend(json_leaves(item, path))
        else:
            leaves.append((path, item))
    return leaves


def conversation_page(
    user_id: int, *, limit: int, cursor: str | None, metadata: str | None = None, q: str | None = None,
    shared: bool = False,
) -> tuple[list[Conversation], str | None]:
    """One page of the user's conversations (with shared: those colleagues shared), pinned first, then newest activity."""
    stmt: Select[Any] = select(Conversation).where(Conversation.user_id == user_id)
    if shared:  # search (q) stays within the user's own conversations
        stmt = select(Conversation).where(Conversation.shared.is_(True), Conversation.user_id != user_id,
                                          Conversation.user_id.in_(colleagues_of(user_id)))
    if metadata:
        stmt = stmt.where(metadata_filter(metadata))
    if q:
        matching = search.matching_conversations(user_id, q)
        if matching is None:
            return [], None
        stmt = stmt.where(Conversation.id.in_(matching))
    stmt, finish = keyset_page(stmt, CONVERSATION_KEYS, CONVERSATION_KEY_TYPES,
                               limit=limit, cursor=cursor, descending=True)
    return finish(db.session.execute(stmt).scalars().all())


def message_page(
    user_id: int, conversation_id: uuid.UUID, *, limit: int, cursor: str | None, descending: bool
) -> tuple[list[Message], str | None]:
    """One page of a conversation's messages, checked to be the user's in the same query.

    Ownership is checked through the conversation (one row by its key), not with
    messages.user_id: that filter tempts PostgreSQL into intersecting the whole user's
    messages (measured: 9 ms instead of 0.4 ms for page 1,000 of a 60,000-message conversation).
    """
    stmt = (select(Message).join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.conversation_id == conversation_id, readable_by(user_id)))
    stmt, finish = keyset_page(stmt, MESSAGE_KEYS, MESSAGE_KEY_TYPES,
                               limit=limit, cursor=cursor, descending=descending)
    items, next_cursor = finish(db.session.execute(stmt).scalars().all())
    if not items and not cursor:
        conversation_access(user_id, conversation_id, write=False)  # empty, unknown or someone else's?
    return items, next_cursor


def create_conversation(user_id: int, title: str | None, metadata: dict[str, Any] | None) -> Conversation:
    """Start a conversation for the user."""
    now = utcnow()
    conversation = Conversation(
        user_id=user_id, title=title, title_set_by_user=title is not None,
        meta=metadata or {}, created_at=now, updated_at=now,
    )
    db.session.add(conversation)
    db.session.commit()
    cache.bump_user(user_id)
    return conversation


def update_conversation(conversation: Conversation, changes: dict[str, Any]) -> Conversation:
    """Apply a PATCH: a new title (which the title job will never overwrite), pinning, metadata."""
    if "title" in changes:
        title = changes["title"]
        conversation.title = title
        conversation.title_set_by_user = title is not None
    if changes.get("pinned") is not None:
        conversation.pinned = changes["pinned"]
    if changes.get("shared") is not None:
        conversation.shared = changes["shared"]
    if changes.get("metadata") is not None:
        conversation.meta = changes["metadata"]
    db.session.commit()
    cache.bump_user(conversation.user_id)
    return conversation


def shared_with_me(conversation: Conversation, user_id: int) -> bool:
    """Whether the user reads the conversation as a colleague (its bodies are then never cached for them,
    so unsharing takes effect at once in every process)."""
    return conversation.user_id != user_id


def delete_conversation(user_id: int, conversation_id: uuid.UUID) -> None:
    """Delete the user's conversation and its messages; NotFound when it is not theirs."""
    result = db.session.execute(
        delete(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    )
    if result.rowcount == 0:
        db.session.rollback()
        refuse_write(user_id, conversation_id)
    db.session.commit()
    cache.bump_user(user_id)


class Turn(NamedTuple):
    """A message of the history, as much of it as the context needs."""

    role: str
    content: str
    status: str


@functools.cache
def answer_load(postgres: bool) -> Select[Any]:
    """The conversation (:user_id's, id :conversation_id) and its :limit newest messages as one JSON array of
    [role, content, status], newest first: one SELECT, built once a process."""
    newest = (select(Message.role, Message.content, Message.status, Message.created_at, Message.id)
              .where(Message.conversation_id == bindparam("conversation_id"))
              .order_by(Message.created_at.desc(), Message.id.desc()).limit(bindparam("limit")).subquery())
    if postgres:
        aggregate = func.json_agg(aggregate_order_by(
            func.json_build_array(newest.c.role, newest.c.content, newest.c.status),
            newest.c.created_at.desc(), newest.c.id.desc()))
    else:  # SQLite aggregates in the order its subquery yields
        aggregate = func.json_group_array(func.json_array(newest.c.role, newest.c.content, newest.c.status))
    turns = type_coerce(select(aggregate).scalar_subquery(), JSON)
    return select(Conversation, turns).where(Conversation.id == bindparam("conversation_id"),
                                            Conversation.user_id == bindparam("user_id"))


def load_for_answer(user_id: int, conversation_id: uuid.UUID) -> tuple[Conversation, list[Turn]]:
    """The conversation and its most recent messages (oldest first), in one query.

    The messages come back as one JSON array rather than as rows and ORM objects: on the
    hot path of every question, that is most of the time the query takes in Python.
    """
    row = db.session.execute(answer_load(db.engine.dialect.name == "postgresql"), {
        "conversation_id": conversation_id, "user_id": user_id,
        "limit": current_app.config["AI_CONTEXT_MESSAGES"]}).first()
    if row is None:
        refuse_write(user_id, conversation_id)
    conversation, newest_first = row
    return conversation, [Turn(*item) for item in reversed(newest_first or [])]


def warm_up() -> None:
    """Compile the history SELECT and let the database plan it (on a nil id: nothing is read)."""
    db.session.execute(answer_load(db.engine.dialect.name == "postgresql"),
                       {"conversation_id": uuid.UUID(int=0), "user_id": 0, "limit": 1}).first()
    db.session.rollback()


def load_for_retry(user_id: int, conversation_id: uuid.UUID,
                   message_id: int) -> tuple[Conversation, Message, list[Message]]:
    """The conversation, one of its questions, and the messages before that question (oldest first)."""
    conversation = get_conversation(user_id, conversation_id)
    question = db.session.execute(
        select(Message).where(Message.id == message_id, Message.conversation_id == conversation_id,
                              Message.role == "user")
    ).scalar_one_or_none()
    if question is None:
        raise NotFound("question")
    earlier = db.session.execute(
        select(Message)
        .where(Message.conversation_id == conversation_id,
               tuple_(Message.created_at, Message.id) < tuple_(question.created_at, question.id))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(current_app.config["AI_CONTEXT_MESSAGES"])
    ).scalars().all()
    return conversation, question, sorted(earlier, key=lambda m: (m.created_at, m.id))


@functools.cache
def message_insert(columns: tuple[str, ...], touch: bool, postgres: bool) -> Any:
    """The INSERT of a message with these columns as bind parameters, built once a process (building and keying
    a Core statement costs more than compiling it); touch: also the conversation's updated_at, by :m_created_at.

    On PostgreSQL a touching INSERT is a data-modifying CTE of the UPDATE: one statement, one round trip.
    """
    table, conversations = Message.__table__, Conversation.__table__
    statement = insert(table).values({column: bindparam(f"m_{column}") for column in columns})
    if not (touch and postgres):
        return statement.returning(table.c.id)
    inserted = statement.returning(table.c.id, table.c.conversation_id).cte("inserted")
    return (update(conversations).where(conversations.c.id == inserted.c.conversation_id)
            .values(updated_at=bindparam("m_created_at")).returning(inserted.c.id))


TOUCH = update(Conversation.__table__).where(Conversation.__table__.c.id == bindparam("m_conversation_id")) \
    .values(updated_at=bindparam("m_created_at"))


def execute_alone(statement: Any, parameters: dict[str, Any]) -> Any:
    """Run one statement as a transaction of its own, outside the session, and return its scalar result.

    Autocommit on the pooled connection: the statement is durable when it returns, without the
    BEGIN and COMMIT round trips a session transaction adds (two of a send's seven on PostgreSQL).
    """
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(statement, parameters).scalar_one()


def store_message(conversation: Conversation, *, touch: bool = False, alone: bool = False,
                  **values: Any) -> Message:
    """INSERT a message with Core (no unit-of-work flush) and return it as a detached Message.

    touch also sets the conversation's updated_at to the message's time (in the same statement on
    PostgreSQL); alone runs the INSERT as its own transaction (execute_alone), committed on return.
    """
    values = {"conversation_id": conversation.id, "user_id": conversation.user_id, "status": "complete",
              "cached": False, "created_at": utcnow(), **values}
    postgres = db.engine.dialect.name == "postgresql"
    parameters = {f"m_{column}": value for column, value in values.items()}
    if touch and not postgres:
        db.session.execute(TOUCH, parameters)
    # Core, not the ORM's bulk insert: a fifth of a question's CPU in bench
    statement = message_insert(tuple(sorted(values)), touch, postgres)
    if alone:
        message_id = execute_alone(statement, parameters)
    else:
        message_id = db.session.execute(statement, parameters).scalar_one()
    return Message(id=message_id, **{"provider": None, "model": None, "tokens_in": None, "tokens_out": None,
                                     "latency_ms": None, "cost_usd": None, "saved_usd": None, "citations": None,
                                     **values})


def add_question(conversation: Conversation, content: str, source: str = "api") -> Message:
    """Store the user's question (asked through source) and mark the conversation active; committed before any AI
    call."""
    message = store_message(conversation, touch=True, role="user", content=content, source=source)
    db.session.commit()
    set_committed_value(conversation, "updated_at", message.created_at)
    cache.bump_user(conversation.user_id)
    return message


def add_answer(conversation: Conversation, completion: Completion, *, status: str = "complete",
               cached: bool = False, citations: list[dict[str, Any]] | None = None, source: str = "api",
               bump: bool = True) -> Message:
    """Store an assistant answer with the provider and model that actually wrote it, what it cost and cites.

    A deduplicated answer cost nothing; it saved what the answer it reuses cost. bump=False leaves
    the user's cache version to the caller, who must bump it before responding.
    """
    cost, saved = pricing.charged(completion.provider, completion.model, completion.tokens_in,
                                  completion.tokens_out, cached)
    # Nothing to commit with it (the usual case on PostgreSQL): the INSERT is a transaction of its own.
    holds = status == "complete" and title_held(conversation)
    alone = db.engine.dialect.name == "postgresql" and not holds and not db.session().in_transaction()
    message = store_message(
        conversation, alone=alone, role="assistant", content=completion.text, status=status,
        provider=completion.provider, model=completion.model, tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out, latency_ms=completion.latency_ms, cached=cached, cost_usd=cost,
        saved_usd=saved, source=source, **({"citations": citations} if citations else {}))
    if not alone:
        if holds:
            hold_title(conversation)  # Redis is known down: the title job rides this transaction
        db.session.commit()
    budgets.spent(message.cost_usd)  # settled against the budgets when the request ends
    if bump:
        cache.bump_user(conversation.user_id)  # its message pages and search results changed
    return message
