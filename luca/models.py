"""The database tables, as typed SQLAlchemy 2 models."""
from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, Numeric, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from luca.extensions import db

# Objects that exist only in the migrations (search columns and indexes that are
# dialect-specific); the migration check ignores them when comparing models.
MIGRATION_ONLY = {
    "conversations_metadata_idx",
    "conversations_search_idx",
    "messages_search_idx",
    "title_tsv",
    "tsv",
    "messages_fts",
    "conversations_fts",
    "document_chunks_search_idx",
    "document_chunks_fts",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
# USD, exact: luca.pricing keeps ten decimal places.
Money = Numeric(18, 10, asdecimal=True)


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (how every timestamp is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


class User(db.Model):
    """Someone who talks to Luca; authenticated by API tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    is_admin: Mapped[bool] = mapped_column(default=False)  # a platform operator, not an organisation role
    password_hash: Mapped[str | None] = mapped_column(String(255))  # argon2id; NULL: no password sign-in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    membership: Mapped[Membership | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan", passive_deletes=True)


class Organisation(db.Model):
    """A firm: it owns its members, and nothing of it is visible to another organisation."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    # The email domain whose single sign-on users are created here (set by an operator, never by the firm).
    domain: Mapped[str | None] = mapped_column(String(254), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(db.Model):
    """A user's one organisation and role in it: owner, admin or member."""

    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    organisation: Mapped[Organisation] = relationship()


class UserSession(db.Model):
    """A signed-in browser: the cookie holds a secret whose SHA-256 hash is stored; revoked by setting revoked_at."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Invitation(db.Model):
    """A one-time invitation into an organisation with a role; only its token's hash is stored."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]


class PasswordReset(db.Model):
    """A one-time password reset link; only its token's hash is stored."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ApiToken(db.Model):
    """A bearer token; only its SHA-256 hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(80), default="")
    # Comma-separated: read, write, admin. Tokens made by the CLI or before scopes existed have all three.
    scopes: Mapped[str] = mapped_column(String(32), default="read,write,admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")


class Conversation(db.Model):
    """A thread of messages between one user and the assistant."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("conversations_user_created_idx", "user_id", "created_at"),
        # The list order: pinned first, then newest activity, id as tie-breaker.
        Index("conversations_user_activity_idx", "user_id", "pinned", "updated_at", "id"),
        # The "shared with me" list: shared conversations of the organisation's members.
        Index("conversations_shared_idx", "shared", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(200))
    title_set_by_user: Mapped[bool] = mapped_column(default=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    pinned: Mapped[bool] = mapped_column(default=False)
    # Readable (never writable) by the owner's organisation; see service.conversation_access.
    shared: Mapped[bool] = mapped_column(default=False)
    # Set on the first upload: from then on, questions carry the files' text and are never shared.
    has_files: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What writing the title cost (it counts towards budgets), and when it was spent.
    title_cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    titled_at: Mapped[datetime | None]


class Message(db.Model):
    """One turn of a conversation: the user's question or the assistant's answer."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("messages_conversation_created_idx", "conversation_id", "created_at"),
        Index("messages_role_created_idx", "role", "created_at"),
        Index("messages_user_created_idx", "user_id", "created_at"),  # usage and a member's month spend
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # Kept on the message so search can narrow by user and by words in one index.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="complete")
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    tokens_in: Mapped[int | None]
    tokens_out: Mapped[int | None]
    latency_ms: Mapped[int | None]
    cached: Mapped[bool] = mapped_column(default=False)
    # An answer's cost at write time (0 when deduplication served it), and what a deduplicated one saved.
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    saved_usd: Mapped[Decimal | None] = mapped_column(Money)
    # The passages an answer cites, [{"n", "file_id", "filename", "page" | "sheet" + "cells" | ..., "snippet"}].
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # The door it came through: "api" (REST and the web app) or "openai-api" (/v1 with a conversation).
    source: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(db.Model):
    """An answer paid for (or served by deduplication) but stored in no conversation: a /v1 call without one.

    Usage and budgets read these beside the stored answers (luca.budgets.answered), so every call counts.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("usage_records_user_created_idx", "user_id", "created_at"),
        Index("usage_records_created_idx", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    tokens_in: Mapped[int | None]
    tokens_out: Mapped[int | None]
    cached: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    saved_usd: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class File(db.Model):
    """A document uploaded to a conversation; its bytes live here so any worker can read them."""

    __tablename__ = "files"
    __table_args__ = (
        Index("files_conversation_created_idx", "conversation_id", "created_at"),
        Index("files_status_updated_idx", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, processing, ready, failed
    progress: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str | None] = mapped_column(String(16))
    pages: Mapped[int | None]
    text: Mapped[str | None] = mapped_column(Text, deferred=True)
    text_chars: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentChunk(db.Model):
    """A passage of a document (about 300-800 tokens) with where it came from; see luca.conversations.retrieval."""

    __tablename__ = "document_chunks"
    __table_args__ = (
        Index("document_chunks_file_idx", "file_id", "position"),
        Index("document_chunks_conversation_idx", "conversation_id", "file_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # Kept on the chunk so retrieval and search narrow by user and by words in one index.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    position: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    anchor: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the whole chunk's place: {"page": 3}, ...
    parts: Mapped[list[Any]] = mapped_column(JSONType)  # [[offset in text, anchor], ...] of its blocks
    tokens: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalyticsDaily(db.Model):
    """Messages rolled up per day, provider, model and role; recomputed whole, so reruns are harmless."""

    __tablename__ = "analytics_daily"

    day: Mapped[date] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    messages: Mapped[int]
    tokens_in: Mapped[int]
    tokens_out: Mapped[int]
    latency_mean_ms: Mapped[float | None]
    latency_p95_ms: Mapped[float | None]
    cached: Mapped[int]
    cost_usd: Mapped[float]


class AnalyticsRollup(db.Model):
    """Which days have been rolled up, and when (the reconciler re-runs days that changed since)."""

    __tablename__ = "analytics_rollups"

    day: Mapped[date] = mapped_column(primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobOutbox(db.Model):
    """A job that could not be enqueued (Redis was down), kept until Redis takes it; see luca.jobs.outbox."""

    __tablename__ = "job_outbox"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # a queue: titles, files, analytics
    job_id: Mapped[str] = mapped_column(String(200), unique=True)  # the deterministic RQ job id, unprefixed
    args: Mapped[list[Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Budget(db.Model):
    """A monthly (UTC calendar month) spending cap held by an organisation or a member; see luca.budgets."""

    __tablename__ = "budgets"

    holder_kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "member" (a user id), "org"
    holder_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    monthly_budget_usd: Mapped[Decimal] = mapped_column(Money)
    # The highest alert level (80, 100) announced, and for which month ("2026-12"): each transition once.
    alerted_month: Mapped[str | None] = mapped_column(String(7))
    alerted_percent: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
