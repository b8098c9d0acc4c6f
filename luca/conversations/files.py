"""Documents uploaded to a conversation, the HTTP views: upload (202, processed by a job), status, lists.

Their rows, processing and context live in luca.conversations.documents.
"""
from __future__ import annotations

import uuid

from flask import current_app, request

from luca.auth import current_user
from luca.conversations import bp, documents, endpoint
from luca.conversations.service import get_conversation
from luca.errors import APIError
from luca.limits import rate_limit
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
    stored = documents.add_file(conversation, clean_filename(upload.filename), data)
    documents.enqueue_file(stored.id)
    return FileOut.model_validate(stored), 202


def clean_filename(name: str | None) -> str:
    """The upload's name without control characters or unpaired surrogates, at most 255 characters."""
    cleaned = "".join(c for c in (name or "") if c.isprintable() and not "\ud800" <= c <= "\udfff").strip()
    return cleaned[:255] or "document"


@bp.get("/files/<int:file_id>")
@endpoint(response=FileOut)
def get_file(file_id: int) -> FileOut:
    """A document's processing status, progress and error, if any."""
    return FileOut.model_validate(documents.user_file(current_user().id, file_id))


@bp.get("/conversations/<uuid:conversation_id>/files")
@endpoint(response=FileList)
def list_files(conversation_id: uuid.UUID) -> FileList:
    """The documents of a conversation, oldest first."""
    conversation = get_conversation(current_user().id, conversation_id)
    return FileList(items=[FileOut.model_validate(f) for f in documents.conversation_files(conversation.id)])
