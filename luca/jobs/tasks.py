"""The background jobs as thin task wrappers: conversation titles, daily analytics, document processing.

Each job takes ids only, re-reads the truth from the database, and is safe to run twice; the work
itself lives with its concept (luca.conversations.titles, luca.analytics, luca.conversations.documents).
RQ finds the jobs by these paths (QueueSpec.task), so their names stay.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, has_app_context

from luca import analytics
from luca.conversations import documents, titles
from luca.extensions import db, jobs, reopen_after_fork
from luca.jobs.queue import QUEUES, is_final_attempt

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

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
                    log.warning("[%s] %s(%s) failed%s: %s", QUEUES[kind].log_name, fn.__name__,
                                ", ".join(map(str, args)), "" if final else ", will retry", type(exc).__name__)
                    raise
                else:
                    jobs.record(kind, "completed")
                    return result
                finally:
                    db.session.remove()

        return run  # type: ignore[return-value]

    return decorate


@task("titles")
def generate_title(conversation_id: str) -> str:
    """Name a conversation after its first question and answer (luca.conversations.titles)."""
    return titles.generate(uuid.UUID(conversation_id))


@task("analytics")
def rollup_analytics(day: str) -> int:
    """Recompute one day's analytics from the messages table."""
    return analytics.rollup_day(date.fromisoformat(day))


@task("files")
def process_file(file_id: int) -> str:
    """Extract a document's text in the sandbox (luca.conversations.documents)."""
    return documents.process(file_id)
