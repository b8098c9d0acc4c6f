"""Where background jobs run: RQ queues on Redis, a small thread pool without Redis, inline when disabled.

The database is the truth; the queue is a reminder. Jobs carry ids only, are idempotent,
and raise on failure so RQ's retries and failed registry see it. If Redis is down when
work is enqueued, nothing is lost: the job is kept in the database's outbox (luca.jobs.outbox)
until Redis answers, and the reconciler finds any work whose enqueue was never recorded.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import Flask
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import import_attribute

from luca.extensions import redis_gateway
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueSpec:
    """One queue and every name it goes by: its RQ queue, its statistics, its log lines and its job ids."""

    name: str  # the RQ queue (under QUEUE_PREFIX), the outbox's kind, the statistics' counters
    stats_name: str  # the key of its admin statistics (the seed's camelCase)
    log_name: str  # the tag of its log lines, e.g. [TitleQueue]
    id_prefix: str  # job ids are <id_prefix>-<key>: see job_id()
    task: str  # the import path of its job function (luca.jobs.tasks), resolved when a job is enqueued
    attempts: int
    timeout_setting: str
    priority: int = 0  # > 0: its jobs go ahead of every waiting job
    result_ttl: int = 300
    failure_ttl: int = 7 * 24 * 3600

    def function(self) -> Callable[..., Any]:
        """The job function (imported on first use: the tasks import the modules that enqueue them)."""
        return import_attribute(self.task)


# Listed in the order a worker listens: titles first (a user is looking at "New chat").
QUEUES: dict[str, QueueSpec] = {
    "titles": QueueSpec("titles", "titleGeneration", "TitleQueue", "title", "luca.jobs.tasks.generate_title",
                        attempts=3, timeout_setting="TITLE_JOB_TIMEOUT"),
    "files": QueueSpec("files", "fileProcessing", "FileQueue", "file", "luca.jobs.tasks.process_file",
                       attempts=2, timeout_setting="FILE_JOB_TIMEOUT", priority=1),
    "analytics": QueueSpec("analytics", "analytics", "AnalyticsQueue", "analytics", "luca.jobs.tasks.rollup_analytics",
                           attempts=2, timeout_setting="ANALYTICS_JOB_TIMEOUT", result_ttl=60),
}


def job_id(kind: str, key: Any) -> str:
    """The one spelling of a job's id: deterministic, so the same work enqueued twice is one job."""
    return f"{QUEUES[kind].id_prefix}-{key}"


ACTIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


@dataclass
class InProcessJob:
    """A job run outside RQ, its retries counted as RQ counts a job's: rq.Retry's max and intervals."""

    retries_left: int
    retry_intervals: list[int]
    get_retry_interval = Job.get_retry_interval  # RQ's own: the wait before the next retry
    should_retry = Job.should_retry

    @classmethod
    def of(cls, retry: Retry | None) -> InProcessJob:
        """A job about to run its first attempt under retry (None: no retries)."""
        return cls(retry.max, retry.intervals) if retry else cls(0, [])


# The in-process job running in this thread (RQ's get_current_job() for jobs outside RQ).
_current: contextvars.ContextVar[InProcessJob | None] = contextvars.ContextVar("luca_job", default=None)


def is_final_attempt() -> bool:
    """Whether the running job has no retries left (so it should leave a final answer)."""
    job: Any = _current.get()
    if job is None:
        from rq import get_current_job

        job = get_current_job()
    return job is None or not job.retries_left


def backoff(attempts: int, base: float) -> list[int]:
    """Exponential waits between attempts: base, 4 x base, 16 x base ..."""
    return [int(base * 4 ** i) for i in range(attempts - 1)]


class Jobs:
    """Enqueue jobs for one app, in the mode its settings choose."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self.mode = "inline" if app.config["DISABLE_QUEUES"] else "rq" if app.config.get("REDIS_URL") else "thread"
        gateway = redis_gateway.of(app)
        self.redis = gateway.client if self.mode == "rq" else None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = Counter()  # statistics of the thread and inline modes
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats_key = gateway.key("jobs", "stats")
        if self.mode == "thread":  # its ticker starts with the first request of each process
            app.before_request(self.start_ticking)

    # -- queues -------------------------------------------------------------------------
    def queue(self, kind: str) -> Queue:
        """The RQ queue for a kind of job (titles, files, analytics)."""
        assert self.redis is not None, "RQ queues need REDIS_URL"
        spec = QUEUES[kind]
        return Queue(self.config["QUEUE_PREFIX"] + spec.name, connection=self.redis.raw,
                     default_timeout=self.config[spec.timeout_setting])

    def queues(self) -> list[Queue]:
        """Every queue, in the order workers listen to them."""
        return [self.queue(kind) for kind in QUEUES]

    # -- enqueueing -----------------------------------------------------------------------
    def enqueue(self, kind: str, func: Callable[..., Any], *args: Any, job_id: str,
                priority: int = 0, replace_stale: bool = False) -> bool:
        """Run func(*args) in the background; priority > 0 puts it ahead of every waiting job.

        job_id makes the job unique while it is waiting or running. Returns False when
        the job could not be queued (Redis down); `tasks.submit` then keeps it in the outbox.
        """
        spec = QUEUES[kind]
        job_id = self.config["QUEUE_PREFIX"] + job_id
        if self.mode == "inline":
            self._run_with_attempts(spec, func, args, wait=False)
            return True
        if self.mode == "thread":
            self._submit(spec, func, args)
            return True
        try:
            return self.redis.call(self._enqueue_rq, spec, kind, func, args, job_id, priority, replace_stale)
        except REDIS_ERRORS as exc:
            log.warning("[Queue] Redis unavailable (%s); %s job %s is not queued",
                        type(exc).__name__, kind, job_id)
            return False

    def _enqueue_rq(self, spec: QueueSpec, kind: str, func: Callable[..., Any], args: tuple[Any, ...],
                    job_id: str, priority: int, replace_stale: bool) -> bool:
        queue = self.queue(kind)
        options = {
            "job_id": job_id, "job_timeout": self.config[spec.timeout_setting], "result_ttl": spec.result_ttl,
            "failure_ttl": spec.failure_ttl, "at_front": priority > 0, "unique": True,
            "retry": self.retry(spec),
            "description": f"{func.__name__}({', '.join(map(str, args))})",
        }
        try:
            queue.enqueue(func, *args, **options)
            return True
        except DuplicateJobError:
            pass
        try:
            existing = Job.fetch(job_id, connection=queue.connection)
            status = existing.get_status()
        except NoSuchJobError:
            status = None
        if status in ACTIVE and not (replace_stale and status == JobStatus.STARTED):
            return True  # already on its way
        if status is not None:
            existing.delete(remove_from_queue=True)
        queue.enqueue(func, *args, **options)
        return True

    # -- without RQ -------------------------------------------------------------------------
    def _submit(self, spec: QueueSpec, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config["JOBS_THREADS"], thread_name_prefix="luca-job")
            self._local[f"{spec.name}.waiting"] += 1
        self._pool.submit(self._run_with_attempts, spec, func, args, True)

    def retry(self, spec: QueueSpec) -> Retry | None:
        """How a queue's jobs are retried, in RQ and in process: attempts - 1 times, waiting longer each time."""
        if spec.attempts < 2:
            return None
        return Retry(max=spec.attempts - 1, interval=backoff(spec.attempts, self.config["JOBS_RETRY_BACKOFF"]))

    def _run_with_attempts(self, spec: QueueSpec, func: Callable[..., Any], args: tuple[Any, ...],
                           wait: bool) -> None:
        """Run a job and its retries as RQ would (waiting between them only off the request path)."""
        with self._lock:
            if wait:
                self._local[f"{spec.name}.waiting"] -= 1
            self._local[f"{spec.name}.active"] += 1
        job = InProcessJob.of(self.retry(spec))
        token = _current.set(job)
        try:
            while True:
                try:
                    with self.app.app_context():
                        func(*args)
                    return
                except Exception:  # noqa: BLE001 - counted and logged by the task; retried here
                    if not job.should_retry:
                        return
                    interval = job.get_retry_interval()
                    job.retries_left -= 1
                    if wait and interval:
                        time.sleep(interval)
        finally:
            _current.reset(token)
            with self._lock:
                self._local[f"{spec.name}.active"] -= 1

    def start_ticking(self) -> None:
        """In the thread mode, reconcile analytics every JOBS_RECONCILE_INTERVAL in a daemon thread.

        Started on the first request of each process (threads do not survive a fork); with Redis,
        the worker's reconciler does this instead.
        """
        if self._ticker is not None:
            return
        with self._lock:
            if self._ticker is None:
                self._stop = threading.Event()
                self._ticker = threading.Thread(target=self._tick_forever, args=(self._stop,),
                                                name="luca-job-ticker", daemon=True)
                self._ticker.start()

    def _tick_forever(self, stop: threading.Event) -> None:
        from luca.jobs.reconcile import reconcile_analytics, reconcile_chunks  # it imports this module

        while not stop.wait(self.config["JOBS_RECONCILE_INTERVAL"]):
            try:
                reconcile_analytics(self.app)
                reconcile_chunks(self.app)
            except Exception:  # noqa: BLE001 - keep ticking; the next round tries again
                log.exception("[Queue] analytics reconciliation failed")

    def close(self) -> None:
        """Stop the ticker and wait for in-process jobs to finish (the app shuts down)."""
        with self._lock:
            ticker, self._ticker = self._ticker, None
            self._stop.set()
        if ticker is not None:
            ticker.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- statistics -----------------------------------------------------------------------------
    def record(self, kind: str, outcome: str) -> None:
        """Count a job outcome: completed, failed (final), or retried."""
        field = f"{QUEUES[kind].name}.{outcome}"
        with self._lock:
            self._local[field] += 1
        if self.redis is not None:
            try:
                self.redis.hincrby(self.stats_key, field, 1)
            except REDIS_ERRORS:
                pass

    def stats(self) -> dict[str, Any]:
        """{"titleGeneration": {"waiting", "active", "completed", "failed", ...}, ..., "redis": {...}}."""
        totals = Counter(self._local)
        result: dict[str, Any] = {}
        redis_ok = False
        if self.redis is not None:
            try:
                totals = Counter({k.decode(): int(v) for k, v in self.redis.hgetall(self.stats_key).items()})
                for kind, spec in QUEUES.items():
                    queue = self.queue(kind)
                    result[spec.stats_name] = {
                        "waiting": queue.count,
                        "active": StartedJobRegistry(queue=queue).count,
                        "scheduled": ScheduledJobRegistry(queue=queue).count,
                        "inFailedRegistry": FailedJobRegistry(queue=queue).count,
                    }
                redis_ok = True
            except REDIS_ERRORS:
                result = {}
        for spec in QUEUES.values():
            entry = result.setdefault(spec.stats_name, {})
            entry.setdefault("waiting", max(0, totals[f"{spec.name}.waiting"]))
            entry.setdefault("active", max(0, totals[f"{spec.name}.active"]))
            completed, failed = totals[f"{spec.name}.completed"], totals[f"{spec.name}.failed"]
            entry.update(completed=completed, failed=failed, retried=totals[f"{spec.name}.retried"],
                         failureRate=round(failed / (completed + failed), 4) if completed + failed else None)
        result["redis"] = {"status": "connected" if redis_ok else "not configured" if self.redis is None
                           else "unavailable", "ready": redis_ok}
        result["mode"] = self.mode
        return result
