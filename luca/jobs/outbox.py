"""The job outbox: jobs that Redis could not take, kept in the database until it can.

A request that finds the `redis` breaker already open writes its job here in the same
transaction as the work, and sends Redis nothing; a request whose enqueue fails after its
commit writes the job right then. `drain()` enqueues the rows and deletes
them as soon as Redis answers (the worker every JOBS_OUTBOX_INTERVAL seconds and when Redis
comes back, `jobs reconcile` at once). Job ids are deterministic, so a job enqueued twice runs once.
With Redis up nothing is written here: the happy path costs no statement.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask, g
from sqlalchemy import Row, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from luca.errors import rollback_quietly
from luca.extensions import db, jobs
from luca.jobs.queue import QUEUES
from luca.models import JobOutbox, utcnow

log = logging.getLogger(__name__)


def redis_known_down() -> bool:
    """Whether this app queues with RQ and its `redis` breaker is open (an enqueue would fail at once)."""
    return jobs.mode == "rq" and not jobs.redis.available()


def _add(kind: str, job_id: str, args: Sequence[Any]) -> None:
    """INSERT the job into the session's transaction, unless the outbox holds that job already."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(JobOutbox).values(kind=kind, job_id=job_id, args=list(args),
                                                        created_at=utcnow())
                       .on_conflict_do_nothing(index_elements=[JobOutbox.job_id]))


def hold(kind: str, job_id: str, *args: Any) -> bool:
    """Before the work's commit: if Redis is known to be down, put the job in the outbox, in that transaction.

    Returns whether it did; the enqueue after the commit then skips the job (see `held`).
    """
    if not redis_known_down():
        return False
    _add(kind, job_id, args)
    g.setdefault("luca_outbox_held", set()).add(job_id)
    return True


def held(job_id: str) -> bool:
    """Whether this request already put the job in the outbox."""
    return job_id in g.get("luca_outbox_held", ())


def record(kind: str, job_id: str, args: Sequence[Any]) -> bool:
    """After the commit, when the enqueue failed: put the job in the outbox in a transaction of its own.

    If the database fails too, the job's fate is unknown; the reconciler's scan finds the work
    after JOBS_RECONCILE_GRACE.
    """
    try:
        _add(kind, job_id, args)
        db.session.commit()
    except SQLAlchemyError as exc:
        rollback_quietly()
        log.warning("[Outbox] could not keep %s job %s (%s); the reconciler will find it", kind, job_id,
                    type(exc).__name__)
        return False
    log.info("[Outbox] Redis did not take %s job %s; kept in the outbox", kind, job_id)
    return True


def pending(limit: int = 1000) -> Sequence[Row[Any]]:
    """The oldest jobs in the outbox: (id, kind, job_id, args)."""
    return db.session.execute(select(JobOutbox.id, JobOutbox.kind, JobOutbox.job_id, JobOutbox.args)
                              .order_by(JobOutbox.id).limit(limit)).all()


def remove(ids: Sequence[int]) -> None:
    """Delete jobs that Redis has taken."""
    db.session.execute(delete(JobOutbox).where(JobOutbox.id.in_(ids)).execution_options(synchronize_session=False))
    db.session.commit()


def submit(kind: str, job_id: str, *args: Any) -> None:
    """After the work's commit: enqueue its job; if Redis does not take it, keep it in the outbox."""
    if held(job_id):
        return
    spec = QUEUES[kind]
    if not jobs.enqueue(kind, spec.function(), *args, job_id=job_id, priority=spec.priority):
        record(kind, job_id, args)


def drain(app: Flask) -> list[tuple[str, str]]:
    """Enqueue the jobs in the outbox, oldest first, and delete them; stop at the first that Redis refuses.

    Returns (kind, job_id) of each job enqueued.
    """
    taken: list[tuple[str, str]] = []
    with app.app_context():
        if redis_known_down():
            return taken
        try:
            rows = []
            for row in pending():
                spec = QUEUES[row.kind]
                if not jobs.enqueue(row.kind, spec.function(), *row.args, job_id=row.job_id, priority=spec.priority):
                    break
                rows.append(row.id)
                taken.append((row.kind, row.job_id))
            if rows:
                remove(rows)
                log.info("[Outbox] enqueued %d kept jobs", len(rows))
        finally:
            db.session.remove()
    return taken
