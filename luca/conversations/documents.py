"""A conversation's documents: their rows and processing state, and their text as an answer's context.

Every query about files is here; `files.py` holds the HTTP views.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select, update

from luca.ai.context import Passage
from luca.conversations import retrieval
from luca.conversations.service import owned
from luca.documents import DocumentError, Limits
from luca.extensions import db
from luca.jobs import outbox
from luca.jobs.queue import QUEUES, job_id
from luca.models import Conversation, File, utcnow
from luca.sandbox import extract_isolated

log = logging.getLogger(__name__)


def add_file(conversation: Conversation, filename: str, data: bytes) -> File:
    """Store an upload as `pending` and commit; its job is held in the outbox in the same transaction if need be."""
    now = utcnow()
    stored = File(conversation_id=conversation.id, user_id=conversation.user_id, filename=filename, size=len(data),
                  sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=now, updated_at=now)
    db.session.add(stored)
    if not conversation.has_files:
        conversation.has_files = True
    hold_file(stored)  # only when Redis is known down: then the job rides this transaction
    db.session.commit()
    return stored


def user_file(user_id: int, file_id: int) -> File:
    """One of the user's files; NotFound when unknown or someone else's."""
    return owned(File, file_id, user_id, "file")


def conversation_files(conversation_id: uuid.UUID) -> Sequence[File]:
    """A conversation's files, oldest first."""
    return db.session.execute(
        select(File).where(File.conversation_id == conversation_id).order_by(File.created_at, File.id)
    ).scalars().all()


def documents_context(conversation: Conversation, question: str,
                      turns: Sequence[str] = ()) -> tuple[str | None, list[str], list[Passage]]:
    """The passages of the conversation's documents that best match the question (see retrieval), every
    file's digest and the passages' ids (for the deduplication key), and the passages (for the citations).

    The digests make the answer's deduplication key private to the user and change it
    whenever a document is added.
    """
    if not conversation.has_files:
        return None, [], []
    digests = list(db.session.execute(
        select(File.sha256).where(File.conversation_id == conversation.id).order_by(File.created_at, File.id)
    ).scalars())
    found = retrieval.retrieve(conversation.user_id, conversation.id, question, turns)
    return found.message, digests + found.keys, found.passages


def document_limits(app: Flask) -> Limits:
    """The extraction limits from the app's settings."""
    return Limits(max_bytes=app.config["FILE_MAX_BYTES"], max_pages=app.config["FILE_MAX_PAGES"],
                  max_uncompressed_bytes=app.config["FILE_MAX_UNCOMPRESSED_BYTES"],
                  max_chars=app.config["FILE_MAX_CHARS"], memory_mb=app.config["DOCUMENT_MEMORY_MB"],
                  cpu_seconds=app.config["DOCUMENT_CPU_SECONDS"])


def set_file(file_id: int, **values: Any) -> None:
    """Update a file's row (status, progress ...) and commit, so readers see it at once."""
    db.session.execute(update(File).where(File.id == file_id).values(updated_at=utcnow(), **values))
    db.session.commit()


def process(file_id: int) -> str:
    """Extract a document's text in the sandbox; a file that cannot be read ends `failed` with the reason."""
    row = db.session.execute(select(File.status, File.data).where(File.id == file_id)).first()
    if row is not None and row.status == "ready":  # read before documents were chunked: chunk it now
        return retrieval.index_stored_file(file_id, document_limits(current_app))
    if row is None or row.status == "failed":
        return "nothing to do"
    set_file(file_id, status="processing", progress=0, error=None)
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= 0.1 or fraction >= 1:
            last[0] = fraction
            set_file(file_id, progress=min(99, int(fraction * 100)))

    try:
        extracted = extract_isolated(row.data, document_limits(current_app), progress)
    except DocumentError as exc:
        set_file(file_id, status="failed", error=exc.reason[:500], progress=100)
        log.info("[%s] file %s failed: %s", QUEUES["files"].log_name, file_id, exc.code)
        return f"failed: {exc.code}"
    retrieval.store_chunks(file_id, extracted)  # committed with the status: a ready file always has its chunks
    set_file(file_id, status="ready", progress=100, kind=extracted.kind, pages=extracted.pages,
             text=extracted.text, text_chars=len(extracted.text))
    retrieval.chunks_committed(file_id)
    return "ready"


def files_in(status: str, before: datetime, limit: int = 1000) -> list[int]:
    """Ids of files in a status, last changed before `before` (for the reconciler)."""
    return list(db.session.execute(
        select(File.id).where(File.status == status, File.updated_at < before).limit(limit)
    ).scalars().all())


def hold_file(file: File) -> None:
    """Before an upload's commit: with Redis known down, put the file's job in the outbox in that transaction."""
    if outbox.redis_known_down():
        db.session.flush()  # the file's INSERT, which the commit would send anyway: the job needs its id
        outbox.hold("files", job_id("files", file.id), file.id)


def enqueue_file(file_id: int) -> None:
    """After an upload: extract the document's text in the background, ahead of waiting work."""
    outbox.submit("files", job_id("files", file_id), file_id)
