"""Conversation titles: the prompt, reading a provider's answer, writing the title, and asking for one.

A conversation nobody named gets a title (and a one-line summary) from a background job after its
first answer; the user's own name always wins.
"""
from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB

from luca import budgets, pricing
from luca.ai import chain
from luca.ai.base import ChatMessage
from luca.ai.chain import ProvidersUnavailable
from luca.ai.offline import OfflineProvider
from luca.extensions import cache, db
from luca.jobs import outbox
from luca.jobs.queue import QUEUES, is_final_attempt, job_id
from luca.models import Conversation, Message

log = logging.getLogger(__name__)

TITLE_MAX = 60
TITLE_PROMPT = (
    "Name this accounting conversation. Reply with exactly two lines:\n"
    "Title: <a short title, at most 60 characters, no quotes>\n"
    "Summary: <one sentence saying what the user wants to know>"
)


def title_from_question(question: str) -> str:
    """A title made from the question itself, when no provider can write one."""
    words = " ".join(question.split())
    if len(words) <= TITLE_MAX:
        return words.rstrip("?.!") or "Conversation"
    cut = words[: TITLE_MAX - 1].rsplit(" ", 1)[0]
    return cut + "…"


def parse_title(text: str) -> tuple[str, str | None]:
    """The title and summary lines of a provider's answer, cleaned and capped."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    found = {m.group(1).lower(): m.group(2).strip() for line in lines
             if (m := re.match(r"(?i)^\**(title|summary)\**\s*[:\-]\s*(.+)$", line))}
    title = found.get("title") or (lines[0] if lines else "")
    summary = found.get("summary") or (lines[1] if len(lines) > 1 and "title" not in found else None)
    title = title.strip().strip('"“”\'*#').strip()
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1].rsplit(" ", 1)[0] + "…"
    return title, (summary[:300] if summary else None)


def write_title(conversation: Conversation, title: str, summary: str | None) -> bool:
    """Set a generated title unless the user named the conversation meanwhile (their name wins)."""
    values: dict[str, Any] = {"title": title}
    if summary:
        if db.engine.dialect.name == "postgresql":
            values["meta"] = type_coerce(Conversation.meta, JSONB).op("||")(
                type_coerce({"summary": summary}, JSONB))
        else:
            values["meta"] = func.json_set(Conversation.meta, "$.summary", summary)
    changed = db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.title_set_by_user.is_(False),
               Conversation.title.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    if changed:
        cache.bump_user(conversation.user_id)
    return bool(changed)


def generate(conversation_id: uuid.UUID) -> str:
    """Name a conversation after its first question and answer, with a one-line summary (the title job)."""
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or conversation.title is not None or conversation.title_set_by_user:
        return "nothing to do"
    from rq import get_current_job

    job = get_current_job()
    log.info("[%s] Processing job %s for conversation %s", QUEUES["titles"].log_name,
             job.id if job else "in-process", conversation_id)
    first = db.session.execute(
        select(Message.role, Message.content).where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at, Message.id).limit(2)
    ).all()
    question = next((content for role, content in first if role == "user"), "")
    answer = next((content for role, content in first if role == "assistant"), "")
    if not question:
        return "no question yet"
    prompt: list[ChatMessage] = [
        {"role": "system", "content": TITLE_PROMPT},
        {"role": "user", "content": f"Question: {question[:1000]}\n\nAnswer: {answer[:1500]}"},
    ]
    try:
        with budgets.spending(conversation.user_id, prompt) as reservation:  # titles count towards budgets
            completion = chain.answer(prompt)
            cost = pricing.cost_usd(completion.provider, completion.model, completion.tokens_in, completion.tokens_out)
            budgets.record_title_cost(conversation.id, cost)
            if reservation is not None:
                reservation.cost = cost
    except budgets.BudgetExceeded:
        write_title(conversation, title_from_question(question), None)
        return "over budget"
    except ProvidersUnavailable:
        if is_final_attempt():  # never leave "New chat" behind: name it after the question, then fail
            write_title(conversation, title_from_question(question), None)
        raise
    if completion.provider == OfflineProvider.name:
        title, summary = title_from_question(question), None  # the offline guide cannot summarise
    else:
        title, summary = parse_title(completion.text)
    write_title(conversation, title or title_from_question(question), summary)
    return title


def untitled(before: datetime, limit: int = 1000) -> list[uuid.UUID]:
    """Answered conversations nobody has named, last active before `before` (for the reconciler)."""
    answered = select(Message.id).where(Message.conversation_id == Conversation.id,
                                        Message.role == "assistant").exists()
    return list(db.session.execute(
        select(Conversation.id).where(Conversation.title.is_(None), Conversation.title_set_by_user.is_(False),
                                      Conversation.updated_at < before, answered).limit(limit)
    ).scalars().all())


def title_wanted(conversation: Conversation) -> bool:
    """Whether Luca should name the conversation (nobody has)."""
    return conversation.title is None and not conversation.title_set_by_user


def title_held(conversation: Conversation) -> bool:
    """Whether hold_title() would put the title job in the outbox now (a title wanted, Redis known down)."""
    return title_wanted(conversation) and outbox.redis_known_down()


def hold_title(conversation: Conversation) -> None:
    """Before an answer's commit: with Redis known down, put the title job in the outbox in that transaction."""
    if title_wanted(conversation):
        outbox.hold("titles", job_id("titles", conversation.id), str(conversation.id))


def enqueue_title(conversation: Conversation) -> None:
    """After an answer: name the conversation in the background if nobody has."""
    if title_wanted(conversation):
        outbox.submit("titles", job_id("titles", conversation.id), str(conversation.id))
