"""The reconciler: enqueue what the database says is unfinished (the database is the truth; the queue a reminder)."""
from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask

from luca import analytics
from luca.conversations import documents, retrieval, titles
from luca.extensions import db, jobs
from luca.jobs import outbox
from luca.jobs.queue import QUEUES, job_id
from luca.models import utcnow

log = logging.getLogger(__name__)


def reconcile_analytics(app: Flask) -> int:
    """Enqueue the rollup of every day of the last week whose messages changed since it was rolled up."""
    spec = QUEUES["analytics"]
    with app.app_context():
        today = utcnow().date()
        days = analytics.days_needing_rollup(today - timedelta(days=7), today)
        db.session.remove()
        return sum(jobs.enqueue("analytics", spec.function(), day.isoformat(), job_id=job_id("analytics", day.isoformat()))
                   for day in days)


def reconcile_chunks(app: Flask) -> int:
    """Enqueue the file job of every ready file without chunks (read before documents were chunked)."""
    with app.app_context():
        unchunked = retrieval.files_without_chunks()
        db.session.remove()
        return sum(jobs.enqueue("files", QUEUES["files"].function(), file_id, job_id=job_id("files", file_id))
                   for file_id in unchunked)


def reconcile(app: Flask) -> dict[str, int]:
    """Enqueue what the database says is unfinished: the outbox at once; then, after the grace, work
    whose enqueue state is unknown (untitled conversations, unprocessed files); and stale analytics days."""
    taken = outbox.drain(app)
    counts = dict.fromkeys(QUEUES, 0)
    for kind, _ in taken:
        counts[kind] += 1
    drained = {taken_id for _, taken_id in taken}
    with app.app_context():
        now = utcnow()
        grace = timedelta(seconds=app.config["JOBS_RECONCILE_GRACE"])
        stale = timedelta(seconds=app.config["JOBS_STALE_AFTER"])
        untitled = titles.untitled(now - grace)
        pending = documents.files_in("pending", now - grace)
        stuck = documents.files_in("processing", now - stale)
        db.session.remove()

        def again(kind: str, key: object, arg: object) -> None:
            wanted = job_id(kind, key)
            if wanted not in drained:  # the outbox just gave it to Redis
                counts[kind] += jobs.enqueue(kind, QUEUES[kind].function(), arg, job_id=wanted)

        for conversation_id in untitled:
            again("titles", conversation_id, str(conversation_id))
        for file_id in pending:
            again("files", file_id, file_id)
        for file_id in stuck:  # its worker died mid-job: run it again
            with app.app_context():
                documents.set_file(file_id, status="pending")
                db.session.remove()
            counts["files"] += jobs.enqueue("files", QUEUES["files"].function(), file_id,
                                            job_id=job_id("files", file_id), replace_stale=True)
        counts["analytics"] += reconcile_analytics(app)
        counts["files"] += reconcile_chunks(app)
        if any(counts.values()):
            log.info("[Reconciler] enqueued %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        return counts
