"""The API's request and response models (pydantic v2); the OpenAPI document is built from them."""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from flask import current_app
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

def money_text(value: Decimal) -> str:
    """An amount of USD as an exact decimal string without trailing zeros ("0.00042")."""
    return f"{value.normalize():f}"


# USD, exact: serialised as a decimal string (JSON numbers would round it).
Money = Annotated[Decimal, PlainSerializer(money_text, return_type=str)]

UTCDateTime = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(timespec="microseconds") + "Z", return_type=str),
]


def storable(value: Any) -> Any:
    """Refuse what the databases cannot store: NUL, lone surrogates, NaN and infinities, integers past 64 bits.

    Strings and keys are checked at any depth (metadata is free-form JSON).
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL (\\u0000) characters")
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise ValueError("must not contain unpaired surrogates")
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("numbers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or infinite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    elif isinstance(value, list):
        for item in value:
            storable(item)
    return value


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0, {} and [] are 1); no recursion."""
    depth, level = 0, [value]
    while containers := [item for item in level if isinstance(item, (dict, list))]:
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def configured(info: ValidationInfo, name: str) -> int:
    """A configured limit (MAX_*): from the validation context luca.api passes (the app's config), else the app's."""
    return (info.context or current_app.config)[name]


def refused(code: str, message: str, **context: Any) -> PydanticCustomError:
    """A validation error answered with its own error code (422 `code`, not `validation_error`); see luca.api."""
    return PydanticCustomError(code, message, {"error_code": code, **context})


def at_most(setting: str) -> Callable[[str, ValidationInfo], str]:
    """A validator: the string is at most the configured number of characters (pydantic's own error)."""

    def check(value: str, info: ValidationInfo) -> str:
        limit = configured(info, setting)
        if len(value) > limit:
            raise PydanticCustomError("string_too_long", "String should have at most {max_length} characters",
                                      {"max_length": limit})
        return value

    return check


def question(value: str, info: ValidationInfo) -> str:
    """A question: trimmed, not blank, at most MAX_MESSAGE_CHARS characters (content_too_long names the limit)."""
    content = value.strip()
    if not content:
        raise PydanticCustomError("blank", "must not be blank")
    limit = configured(info, "MAX_MESSAGE_CHARS")
    if len(content) > limit:
        raise refused("content_too_long", "content is {length} characters; the limit is {limit}",
                      length=len(content), limit=limit)
    return content


def metadata_within_limits(value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
    """Conversation metadata nested at most MAX_METADATA_DEPTH deep and at most MAX_METADATA_BYTES as compact JSON."""
    if value is None:
        return value
    depth, limit = json_depth(value), configured(info, "MAX_METADATA_DEPTH")
    if depth > limit:
        raise refused("metadata_too_deep", "metadata nests {depth} levels deep; the limit is {limit}",
                      depth=depth, limit=limit)
    size, limit = len(json.dumps(value, separators=(",", ":"))), configured(info, "MAX_METADATA_BYTES")
    if size > limit:
        raise refused("metadata_too_large", "metadata is {size} bytes; the limit is {limit}", size=size, limit=limit)
    return value


Title = Annotated[str, Field(min_length=1, description="at most MAX_TITLE_CHARS characters (200)"),
                  AfterValidator(at_most("MAX_TITLE_CHARS"))]
Metadata = Annotated[dict[str, Any], Field(description="free-form JSON: at most MAX_METADATA_DEPTH levels (32) and "
                                                       "MAX_METADATA_BYTES (16 KiB) as compact JSON")]


class Body(BaseModel):
    """A request body: strict types, unknown fields rejected, nothing a database cannot store."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @field_validator("*")
    @classmethod
    def check_storable(cls, value: Any) -> Any:
        return storable(value)


class Out(BaseModel):
    """A response model, filled from ORM objects or dicts."""

    model_config = ConfigDict(from_attributes=True)


class UserOut(Out):
    """The signed-in user."""

    id: int
    email: str
    name: str
    is_admin: bool
    created_at: UTCDateTime


class ConversationCreate(Body):
    """Start a conversation; the title is generated after the first answer when not given."""

    title: Title | None = None
    metadata: Annotated[Metadata | None, AfterValidator(metadata_within_limits)] = None


class ConversationUpdate(Body):
    """Rename, pin or unpin, share with the organisation (read-only) or not, or replace the metadata."""

    title: Title | None = None
    pinned: bool | None = None
    shared: bool | None = None
    metadata: Annotated[Metadata | None, AfterValidator(metadata_within_limits)] = None


class ConversationOut(Out):
    """A conversation as the API shows it."""

    id: uuid.UUID
    title: str | None
    title_set_by_user: bool
    metadata: dict[str, Any] = Field(validation_alias="meta")
    pinned: bool
    shared: bool = False
    user_id: int = Field(description="the owner: you, or the colleague who shared it")
    created_at: UTCDateTime
    updated_at: UTCDateTime


class ConversationPage(BaseModel):
    """A page of conversations; pass next_cursor back as cursor for the next one."""

    items: list[ConversationOut]
    next_cursor: str | None


class ConversationListQuery(BaseModel):
    """Query string of the conversation list."""

    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=500)
    q: str | None = Field(None, min_length=1, max_length=200, description="only conversations matching these words")
    metadata: str | None = Field(None, max_length=2000,
                                 description="a JSON object; only conversations whose metadata contains it")
    shared: bool | None = Field(None, description="true: the conversations colleagues shared with you, instead")


class MessageListQuery(BaseModel):
    """Query string of the message list."""

    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=500)
    order: Literal["asc", "desc"] = Field("desc", description="desc: newest first (page backwards)")


class MessageCreate(Body):
    """A user's question."""

    content: Annotated[str, Field(min_length=1, description="trimmed; not blank, at most MAX_MESSAGE_CHARS "
                                                            "characters (20,000)"), AfterValidator(question)]
    stream: bool = False
    cache: bool = True


class RetryRequest(Body):
    """Options for asking again; the body may be left out."""

    stream: bool = False
    cache: bool = True


class Place(BaseModel):
    """Where in a document: a PDF page; an XLSX sheet and cells; CSV rows; text lines; a DOCX heading and paragraph."""

    page: int | None = None
    sheet: str | None = None
    cells: str | None = None
    rows: str | None = None
    lines: str | None = None
    heading: str | None = None
    paragraph: int | None = None
    paragraphs: str | None = None


class Citation(Place):
    """A passage an answer cites by its marker [n]: the file, the place, and the text quoted (plain text)."""

    n: int
    file_id: int
    filename: str
    snippet: str


class MessageOut(Out):
    """One message; answers carry the provider and model that actually wrote them, and the passages they cite."""

    id: int
    conversation_id: uuid.UUID
    role: str
    content: str
    status: str
    provider: str | None
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: int | None
    cached: bool
    cost_usd: Money | None = Field(None, description="USD, exact; 0 for a deduplicated answer; null for a question")
    saved_usd: Money | None = Field(None, description="USD a deduplicated answer saved (the cost of the one reused)")
    citations: list[Citation] | None = None
    created_at: UTCDateTime


class StartEvent(BaseModel):
    """The first event of a streamed answer: the stored question, and who answers it."""

    conversation_id: uuid.UUID
    message: MessageOut
    provider: str
    model: str
    cached: bool


class DeltaEvent(BaseModel):
    """The next piece of the answer's text."""

    text: str


class EndEvent(BaseModel):
    """The last event of a whole answer: the stored answer, and the passages it cites (as in the message)."""

    message: MessageOut
    citations: list[Citation] = []


class ErrorEvent(BaseModel):
    """The last event of an answer cut off: the part received, stored as incomplete."""

    code: str
    message: str
    answer: MessageOut


# The Server-Sent Events of a streamed answer by name: start, delta..., then end or error.
ANSWER_EVENTS: dict[str, type[BaseModel]] = {"start": StartEvent, "delta": DeltaEvent, "end": EndEvent,
                                             "error": ErrorEvent}


class MessagePage(BaseModel):
    """A page of messages; pass next_cursor back as cursor for the next one."""

    items: list[MessageOut]
    next_cursor: str | None


class Exchange(BaseModel):
    """The stored question and the answer it got."""

    message: MessageOut
    answer: MessageOut


class FileOut(Out):
    """An uploaded document and where its processing stands."""

    id: int
    conversation_id: uuid.UUID
    filename: str
    size: int
    status: Literal["pending", "processing", "ready", "failed"]
    progress: int
    kind: str | None
    pages: int | None
    text_chars: int | None
    error: str | None
    created_at: UTCDateTime
    updated_at: UTCDateTime


class FileList(BaseModel):
    """A conversation's documents, oldest first."""

    items: list[FileOut]


class SearchQuery(BaseModel):
    """Query string of the search endpoint."""

    q: str = Field(min_length=1, max_length=200)
    limit: int = Field(20, ge=1, le=50)


class SearchHit(Place):
    """A matching title, message or document passage; snippet is HTML-escaped text with <mark> around the matches.

    A document hit (kind "document") names its file and its place (page, or sheet and cells, rows ...).
    """

    kind: Literal["title", "message", "document"]
    file_id: int | None = None
    filename: str | None = None
    conversation_id: uuid.UUID
    conversation_title: str | None
    message_id: int | None
    role: str | None
    snippet: str
    rank: float
    created_at: UTCDateTime


class SearchResults(BaseModel):
    """Search hits, best first."""

    query: str
    items: list[SearchHit]
