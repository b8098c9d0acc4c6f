"""Documents uploaded to a conversation: upload (202, processed by a job), status, and their text as context."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from flask import current_app, request
from sqlalchemy import select

from luca.ai.context import Passage
from luca.auth import current_user
from luca.conversations import bp, endpoint, retrieval
from luca.conversations.service import get_conversation
from luca.errors import APIError, not_found
from luca.extensions import db
from luca.jobs.tasks import enqueue_file, hold_file
from luca.limits import rate_limit
from luca.models import Conversation, File, utcnow
from luca.schemas import FileList, FileOut


@bp.post("/conversations/<uuid:conversation_id>/files")
@rate_limit("uploads")
@endpoint(response=FileOut, status=202, upload="file", errors=(400, 413, 415, 422, 429))
def upload_file(conversation_id: uuid.UUID) -> tuple[FileOut, int]:
    """Upload a document (multipart field `file`); its text is extracted in the background."""
    if not request.mimetype.startswith("multipart/form-data"):
        raise APIError(415, "unsupported_media_type", "upload the document as multipart/form-data, field 'file'")
    upload = request.files.get("file")
    if upload is None:
        raise APIError(422, "validation_error", "the multipart field 'file' is missing",
                       [{"field": "file", "message": "required"}])
    limit = current_app.config["FILE_MAX_BYTES"]
    try:
        data = upload.stream.read(limit + 1)
    finally:
        upload.close()  # a large upload is spooled to a temporary file
    if len(data) > limit:
        raise APIError(413, "file_too_large", f"the file is larger than {limit} bytes")
    if not data:
        raise APIError(422, "validation_error", "the file is empty", [{"field": "file", "message": "empty"}])
    conversation = get_conversation(current_user().id, conversation_id)
    now = utcnow()
    stored = File(conversation_id=conversation.id, user_id=conversation.user_id,
                  filename=clean_filename(upload.filename), size=len(data),
                  sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=now, updated_at=now)
    db.session.add(stored)
    if not conversation.has_files:
        conversation.has_files = True
    hold_file(stored)  # only when Redis is known down: then the job rides this transaction
    db.session.commit()
    enqueue_file(stored.id)
    return FileOut.model_validate(stored), 202


def clean_filename(name: str | None) -> str:
    """The upload's name without control characters or unpaired surrogates, at most 255 characters."""
    cleaned = "".join(c for c in (name or "") if c.isprintable() and not "\ud800" <= c <= "\udfff").strip()
    return cleaned[:255] or "document"


@bp.get("/files/<int:file_id>")
@endpoint(response=FileOut)
def get_file(file_id: int) -> FileOut:
    """A document's processing status, progress and error, if any."""
    found = db.session.execute(
        select(File).where(File.id == file_id, File.user_id == current_user().id)
    ).scalar_one_or_none()
    if found is None:
        raise not_found("file")
    return FileOut.model_validate(found)


@bp.get("/conversations/<uuid:conversation_id>/files")
@endpoint(response=FileList)
def list_files(conversation_id: uuid.UUID) -> FileList:
    """The documents of a conversation, oldest first."""
    conversation = get_conversation(current_user().id, conversation_id)
    files = db.session.execute(
        select(File).where(File.conversation_id == conversation.id).order_by(File.created_at, File.id)
    ).scalars().all()
    return FileList(items=[FileOut.model_validate(f) for f in files])


def documents_context(conversation: Conversation, question: str,
                      turns: Sequence[str] = ()) -> tuple[str | None, list[str], list[Passage]]:
    """The passages of the conversation's documents that best match the question, every file's digest and
    the passages' ids (for the deduplication key), and the passages (for the answer's citations).

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
