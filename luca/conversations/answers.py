"""Answering a question: in one of its user's answer slots, whole or streamed (Server-Sent Events),
deduplicated unless opted out."""
from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from flask import Response, stream_with_context
from pydantic import BaseModel

from luca.ai import chain
from luca.ai.base import ChatMessage, Completion, estimate_tokens
from luca.ai.chain import AnswerStream, ProvidersUnavailable
from luca.ai.context import Passage
from luca.ai.dedup import Deduplicator, ReplayStream, answer_key, sharing_scope
from luca.auth import current_user
from luca.conversations import service
from luca.conversations.retrieval import cite
from luca.conversations.titles import enqueue_title
from luca.errors import APIError
from luca.extensions import cache, dedup, providers, slots
from luca.models import Conversation, Message
from luca.redis import REDIS_ERRORS
from luca.schemas import ANSWER_EVENTS, DeltaEvent, EndEvent, ErrorEvent, Exchange, MessageOut, StartEvent
from luca.slots import Slot

log = logging.getLogger(__name__)

# Retry-After of a refused answer: answers usually take seconds, and a slot frees as one ends.
SLOT_RETRY_AFTER = 5


# The event name of each model in ANSWER_EVENTS, the table the OpenAPI document is built from.
EVENT_NAMES = {model: name for name, model in ANSWER_EVENTS.items()}


def sse(data: BaseModel) -> str:
    """One Server-Sent Event of an answer stream, named for its model; the data is the model as JSON."""
    return f"event: {EVENT_NAMES[type(data)]}\ndata: {data.model_dump_json(ensure_ascii=True)}\n\n"


def unavailable(exc: ProvidersUnavailable, question: Message) -> APIError:
    """The 503 for 'no provider can answer': the question is kept and can be retried."""
    return APIError(
        503, "providers_unavailable",
        "no AI provider can answer right now; your message is saved, retry it later",
        details={"message_id": question.id,
                 "retry": f"/api/conversations/{question.conversation_id}/messages/{question.id}/retry"},
        headers={"Retry-After": str(exc.retry_after)})


def too_many_answers(limit: int) -> APIError:
    """The 429 for 'all of this user's answer slots are in use': nothing was stored."""
    return APIError(
        429, "too_many_concurrent_answers",
        f"at most {limit} answers at a time per user; wait for one to finish, "
        f"then try again (in {SLOT_RETRY_AFTER} seconds)",
        details={"limit": limit}, headers={"Retry-After": str(SLOT_RETRY_AFTER)})


def within_slot(user_id: int, answer: Callable[[], Any]) -> Any:
    """Run answer() (store the question, answer it) in one of the user's slots; 429 when all are in use.

    The slot is taken before anything is stored or any provider is called, and given back when
    answer() returns or fails, or, for a streamed answer, when the server closes the response:
    after its last event, or when the client went away (the next write fails and the WSGI server
    closes the response; werkzeug and gunicorn both do). Should a response be dropped unclosed,
    its garbage collection gives the slot back.
    """
    slot = slots.acquire(user_id)
    if slot is None:
        raise too_many_answers(slots.limit)
    try:
        result = answer()
    except BaseException:
        slot.release()
        raise
    if isinstance(result, Response):
        result.call_on_close(slot.release)
        weakref.finalize(result, slot.release).atexit = False
    elif isinstance(result, Exchange):  # respond() stored a whole answer and left its cache bump to this
        release_after_answer(slot, user_id)
    else:
        slot.release()
    return result


def release_after_answer(slot: Slot, user_id: int) -> None:
    """Bump the user's cache version for the stored answer and give the slot back: one Redis round trip when
    the cache and the slots share a Redis client (the default), before the response is sent."""
    client = slots.redis
    if not slot.shared or client is None or client is not cache.redis:
        cache.bump_user(user_id)
        slot.release()
        return
    pipeline = client.pipeline(transaction=False)
    cache.bump_user(user_id, pipeline)
    slot.release(pipeline)
    try:
        pipeline.execute()
    except REDIS_ERRORS as exc:  # the bump stays in this process; the slot's lease ends it in Redis
        log.debug("[Slots] the answer's cache bump and slot release failed (%s)", type(exc).__name__)


def conversation_key(context: list[ChatMessage], file_digests: Sequence[str]) -> str:
    """The dedup key of a conversation's answer for the current user: the whole chain, their organisation's scope."""
    user = current_user()
    return answer_key(providers.all(), context, user.id, file_digests, scope=sharing_scope(user))


def respond(conversation: Conversation, question: Message, context: list[ChatMessage], file_digests: list[str],
            *, stream: bool, use_cache: bool, passages: Sequence[Passage] = ()) -> Any:
    """Answer a stored question, whole (201 JSON) or streamed (Server-Sent Events).

    Unless the client opted out, identical contexts are answered once (see luca.ai.dedup). The
    answer's citations are the passages whose markers [n] it contains.
    """
    deduplicator = dedup.of() if use_cache and not cache.disabled else None
    key = conversation_key(context, file_digests) if deduplicator else ""
    if stream:
        return stream_response(conversation, question, context, deduplicator, key, passages)
    started = time.perf_counter()
    try:
        if deduplicator:
            completion, cached = deduplicator.answer(key, lambda: chain.answer(context))
        else:
            completion, cached = chain.answer(context), False
    except ProvidersUnavailable as exc:
        raise unavailable(exc, question) from None
    if cached:
        completion = replace(completion, latency_ms=int((time.perf_counter() - started) * 1000))
    answer = service.add_answer(conversation, completion, cached=cached, bump=False,  # within_slot bumps
                                citations=cite(completion.text, passages, question.content))
    enqueue_title(conversation)
    return Exchange(message=MessageOut.model_validate(question), answer=MessageOut.model_validate(answer))


def open_answer(context: list[ChatMessage], deduplicator: Deduplicator | None,
                key: str) -> tuple[AnswerStream | ReplayStream, bool, bool]:
    """A stream of the answer: a stored one replayed, or a provider's. Returns (stream, cached, leader)."""
    hit, leader = deduplicator.begin(key) if deduplicator else (None, False)
    if hit:
        return ReplayStream(hit), True, False
    try:
        stream = chain.open_stream(context)
    except ProvidersUnavailable:
        if leader and deduplicator:
            deduplicator.finish(key)
        raise
    return stream, False, leader


def stream_response(conversation: Conversation, question: Message, context: list[ChatMessage],
                    deduplicator: Deduplicator | None, key: str, passages: Sequence[Passage] = ()) -> Response:
    """Stream the answer: start, delta..., then end, or error with the partial answer saved as incomplete."""
    try:
        stream, cached, leader = open_answer(context, deduplicator, key)
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
        if deduplicator and status == "complete":
            deduplicator.store(key, completion)
        return service.add_answer(conversation, completion, status=status, cached=cached,
                                  citations=cite(text, passages, question.content))

    @stream_with_context
    def events() -> Iterator[str]:
        parts: list[str] = []
        saved = completed = False
        deltas = iter(stream)
        try:
            yield sse(StartEvent(conversation_id=conversation.id, message=MessageOut.model_validate(question),
                                 provider=stream.provider.name, model=stream.provider.model, cached=cached))
            for delta in deltas:
                parts.append(delta)
                yield sse(DeltaEvent(text=delta))
            completed = True
        except Exception as exc:  # noqa: BLE001 - the provider broke off after the first delta
            log.warning("[AI] %s stream broke off (%s)", stream.provider.name, type(exc).__name__)
            saved = True
            partial = save(parts, "incomplete")
            yield sse(ErrorEvent(code="stream_interrupted",
                                 message="the answer was cut off; the part received is saved as incomplete",
                                 answer=MessageOut.model_validate(partial)))
            return
        finally:
            close = getattr(deltas, "close", None)
            if close:
                close()
            if not saved and stream.end is None:  # the client went away mid-answer
                saved = True
                save(parts, "incomplete")
            if leader and deduplicator and not completed:  # no answer to store: waiting twins compute their own
                deduplicator.finish(key)
        saved = True
        try:
            answer = save(parts, "complete")  # stores the answer for deduplication first ...
        finally:
            if leader and deduplicator:
                deduplicator.finish(key)  # ... so the twins waiting on this flight wake to it
        enqueue_title(conversation)
        message = MessageOut.model_validate(answer)
        yield sse(EndEvent(message=message, citations=message.citations or []))

    return Response(events(), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
