"""The background jobs: conversation titles, daily analytics, and document processing.

Each job takes ids only, re-reads the truth from the database, and is safe to run twice.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, has_app_context
from sqlalchemy import func, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB

from luca import analytics
from luca.ai import chain
from luca.ai.chain import ProvidersUnavailable
from luca.ai.offline import OfflineProvider
from luca.documents import DocumentError, Limits
from luca.extensions import cache, db, jobs, reopen_after_fork
from luca.jobs import outbox
from luca.jobs.queue import QUEUES, is_final_attempt
from luca.models import Conversation, File, Message, utcnow
from luca.sandbox import extract_isolated

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

TITLE_MAX = 60
TITLE_PROMPT = (
    "Name this accounting conversation. Reply with exactly two lines:\n"
    "Title: <a short title, at most 60 characters, no quotes>\n"
    "Summary: <one sentence saying what the user wants to know>"
)

_bound_app: Flask | None = None
_pool_pid: int | None = None


def bind_app(app: Flask) -> None:
    """Tell jobs which app to run in (the worker builds it once)."""
    global _bound_app, _pool_pid
    _bound_app = app
    _pool_pid = os.getpid()


def job_app() -> Flask:
    """The app a job runs in: the current one, the bound one, or a new one."""
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    if _bound_app is None:
        from luca import create_app

        bind_app(create_app())
    assert _bound_app is not None
    return _bound_app


def after_fork(app: Flask) -> None:
    """In an RQ work horse (a fork), open fresh connections instead of sharing the parent's."""
    global _pool_pid
    if _pool_pid == os.getpid():
        return
    _pool_pid = os.getpid()
    reopen_after_fork(app)


def task(kind: str) -> Callable[[F], F]:
    """Run a job inside the app, counting its outcome for the queue statistics."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def run(*args: Any) -> Any:
            app = job_app()
            after_fork(app)
            with app.app_context():
                try:
                    result = fn(*args)
                except Exception as exc:
                    final = is_final_attempt()
                    jobs.record(kind, "failed" if final else "retried")
                    log.warning("[%s] %s(%s) failed%s: %s", QUEUES[kind].stats_name, fn.__name__,
                                ", ".join(map(str, args)), "" if final else ", will retry", type(exc).__name__)
                    raise
                else:
                    jobs.record(kind, "completed")
                    return result
                finally:
                    db.session.remove()

        return run  # type: ignore[return-value]

    return decorate


# -- titles ---------------------------------------------------------------------------------
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


@task("titles")
def generate_title(conversation_id: str) -> str:
    """Name a conversation after its first question and answer, with a one-line summary."""
    conversation = db.session.get(Conversation, uuid.UUID(conversation_id))
    if conversation is None or conversation.title is not None or conversation.title_set_by_user:
        return "nothing to do"
    from rq import get_current_job

    job = get_current_job()
    log.info("[TitleQueue] Processing job %s for conversation %s", job.id if job else "in-process", conversation_id)
    first = db.session.execute(
        select(Message.role, Message.content).where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at, Message.id).limit(2)
    ).all()
    question = next((content for role, content in first if role == "user"), "")
    answer = next((content for role, content in first if role == "assistant"), "")
    if not question:
        return "no question yet"
    try:
        completion = chain.answer([
            {"role": "system", "content": TITLE_PROMPT},
            {"role": "user", "content": f"Question: {question[:1000]}\n\nAnswer: {answer[:1500]}"},
        ])
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


# -- analytics ----------------------------------------------------------------------------------
@task("analytics")
def rollup_analytics(day: str) -> int:
    """Recompute one day's analytics from the messages table."""
    return analytics.rollup_day(date.fromisoformat(day))


# -- documents ----------------------------------------------------------------------------------
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


@task("files")
def process_file(file_id: int) -> str:
    """Extract a document's text in the sandbox; a file that cannot be read ends `failed` with the reason."""
    row = db.session.execute(select(File.status, File.data).where(File.id == file_id)).first()
    if row is None or row.status in ("ready", "failed"):
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
        log.info("[FileQueue] file %s failed: %s", file_id, exc.code)
        return f"failed: {exc.code}"
    from luca.conversations.retrieval import chunks_committed, store_chunks  # (conversations imports this module)

    store_chunks(file_id, extracted)  # committed with the status: a ready file always has its chunks
    set_file(file_id, status="ready", progress=100, kind=extracted.kind, pages=extracted.pages,
             text=extracted.text, text_chars=len(extracted.text))
    chunks_committed(file_id)
    return "ready"


@task("files")
def index_file(file_id: int) -> str:
    """Make the chunks of a file that was ready before documents were chunked (the reconciler finds them)."""
    from luca.conversations.retrieval import index_stored_file

    return index_stored_file(file_id, document_limits(current_app))


# -- enqueueing, and finding work the queue lost ------------------------------------------------------
def job_function(kind: str) -> tuple[Callable[..., Any], int]:
    """The job function of a queue and the priority its jobs are enqueued with."""
    return {"titles": (generate_title, 0), "files": (process_file, 1), "analytics": (rollup_analytics, 0)}[kind]


def submit(kind: str, job_id: str, *args: Any) -> None:
    """After the work's commit: enqueue its job; if Redis does not take it, keep it in the outbox."""
    if outbox.held(job_id):
        return
    func, priority = job_function(kind)
    if not jobs.enqueue(kind, func, *args, job_id=job_id, priority=priority):
        outbox.record(kind, job_id, args)


def drain_outbox(app: Flask | None = None) -> list[tuple[str, str]]:
    """Enqueue the jobs in the outbox, oldest first, and delete them; stop at the first that Redis refuses.

    Returns (kind, job_id) of each job enqueued.
    """
    app = app or job_app()
    taken: list[tuple[str, str]] = []
    with app.app_context():
        if jobs.mode == "rq" and not jobs.redis.available():
            return taken
        try:
            rows = []
            for row in outbox.pending():
                func, priority = job_function(row.kind)
                if not jobs.enqueue(row.kind, func, *row.args, job_id=row.job_id, priority=priority):
                    break
                rows.append(row.id)
                taken.append((row.kind, row.job_id))
            if rows:
                outbox.remove(rows)
                log.info("[Outbox] enqueued %d kept jobs", len(rows))
        finally:
            db.session.remove()
    return taken


def reconcile_analytics(app: Flask) -> int:
    """Enqueue the rollup of every day of the last week whose messages changed since it was rolled up."""
    with app.app_context():
        today = utcnow().date()
        days = analytics.days_needing_rollup(today - timedelta(days=7), today)
        db.session.remove()
        return sum(jobs.enqueue("analytics", rollup_analytics, day.isoformat(), job_id=f"analytics-{day.isoformat()}")
                   for day in days)


def reconcile_chunks(app: Flask) -> int:
    """Enqueue the chunking of every ready file without chunks (processed before documents were chunked)."""
    from luca.conversations.retrieval import files_without_chunks  # the conversations package imports this module

    with app.app_context():
        unchunked = files_without_chunks()
        db.session.remove()
        return sum(jobs.enqueue("files", index_file, file_id, job_id=f"chunks-{file_id}") for file_id in unchunked)


def reconcile(app: Flask | None = None) -> dict[str, int]:
    """Enqueue what the database says is unfinished: the outbox at once; then, after the grace, work
    whose enqueue state is unknown (untitled conversations, unprocessed files); and stale analytics days."""
    app = app or job_app()
    taken = drain_outbox(app)
    counts = dict.fromkeys(QUEUES, 0)
    for kind, _ in taken:
        counts[kind] += 1
    drained = {job_id for _, job_id in taken}
    with app.app_context():
        now = utcnow()
        grace = timedelta(seconds=app.config["JOBS_RECONCILE_GRACE"])
        stale = timedelta(seconds=app.config["JOBS_STALE_AFTER"])
        answered = select(Message.id).where(Message.conversation_id == Conversation.id,
                                            Message.role == "assistant").exists()
        untitled = db.session.execute(
            select(Conversation.id).where(Conversation.title.is_(None), Conversation.title_set_by_user.is_(False),
                                          Conversation.updated_at < now - grace, answered).limit(1000)
        ).scalars().all()
        pending = db.session.execute(
            select(File.id).where(File.status == "pending", File.updated_at < now - grace).limit(1000)
        ).scalars().all()
        stuck = db.session.execute(
            select(File.id).where(File.status == "processing", File.updated_at < now - stale).limit(1000)
        ).scalars().all()
        db.session.remove()

        def again(kind: str, func: Callable[..., Any], *args: Any, job_id: str) -> None:
            if job_id not in drained:  # the outbox just gave it to Redis
                counts[kind] += jobs.enqueue(kind, func, *args, job_id=job_id)

        for conversation_id in untitled:
            again("titles", generate_title, str(conversation_id), job_id=f"title-{conversation_id}")
        for file_id in pending:
            again("files", process_file, file_id, job_id=f"file-{file_id}")
        for file_id in stuck:  # its worker died mid-job: run it again
            with app.app_context():
                set_file(file_id, status="pending")
                db.session.remove()
            counts["files"] += jobs.enqueue("files", process_file, file_id, job_id=f"file-{file_id}",
                                            replace_stale=True)
        counts["files"] += reconcile_chunks(app)
        counts["analytics"] += reconcile_analytics(app)
        if any(counts.values()):
            log.info("[Reconciler] enqueued %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        return counts


def title_wanted(conversation: Conversation) -> bool:
    """Whether Luca should name the conversation (nobody has)."""
    return conversation.title is None and not conversation.title_set_by_user


def hold_title(conversation: Conversation) -> None:
    """Before an answer's commit: with Redis known down, put the title job in the outbox in that transaction."""
    if title_wanted(conversation):
        outbox.hold("titles", f"title-{conversation.id}", str(conversation.id))


def enqueue_title(conversation: Conversation) -> None:
    """After an answer: name the conversation in the background if nobody has."""
    if title_wanted(conversation):
        submit("titles", f"title-{conversation.id}", str(conversation.id))


def hold_file(file: File) -> None:
    """Before an upload's commit: with Redis known down, put the file's job in the outbox in that transaction."""
    if outbox.redis_known_down():
        db.session.flush()  # the file's INSERT, which the commit would send anyway: the job needs its id
        outbox.hold("files", f"file-{file.id}", file.id)


def enqueue_file(file_id: int) -> None:
    """After an upload: extract the document's text in the background, ahead of waiting work."""
    submit("files", f"file-{file_id}", file_id)
