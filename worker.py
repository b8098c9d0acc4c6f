"""The RQ worker: builds the app once, preloads the jobs, listens to the queues in priority order.

    python worker.py            # work until stopped (SIGTERM finishes the current job first)
    python worker.py --burst    # work until the queues are empty, then exit

Besides the queues it runs RQ's scheduler (retries wait there), drains the job outbox (jobs
that Redis could not take while it was down) every JOBS_OUTBOX_INTERVAL seconds and whenever
Redis answers again, and, every JOBS_RECONCILE_INTERVAL seconds, the reconciler, which enqueues
whatever the database says is unfinished. Only one worker at a time reconciles (a Redis lock).
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from redis import Redis
from rq import Worker

from luca import create_app
from luca.extensions import jobs, redis_gateway, shutdown
from luca.jobs import tasks  # noqa: F401 - preloaded so work horses fork with the jobs imported
from luca.jobs.outbox import drain
from luca.jobs.queue import Jobs
from luca.jobs.reconcile import reconcile
from luca.jobs.tasks import bind_app
from luca.redis import REDIS_ERRORS

log = logging.getLogger("luca.worker")


class LucaWorker(Worker):
    """RQ's worker, which also honours a SIGTERM that arrived before RQ installed its handlers."""

    stopping = False  # set by SIGTERM/SIGINT at any moment: start-up, work, or waiting for Redis

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if LucaWorker.stopping:
            self.log.info("[Worker] SIGTERM arrived during start-up: stopping")
            self._stop_requested = True  # the work loop checks this before taking a job

    def request_stop(self, signum: int, frame: object) -> None:
        """Note the stop for the supervising loop too, then let RQ stop warmly."""
        LucaWorker.stopping = True
        super().request_stop(signum, frame)  # type: ignore[arg-type]


def note_stop(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT outside RQ's work loop (start-up, waiting for Redis): stop at the next chance."""
    LucaWorker.stopping = True


def wait_for_redis(client: Redis) -> bool:
    """Wait until Redis answers (False if a stop was requested meanwhile)."""
    delay, told = 0.5, False
    while not LucaWorker.stopping:
        try:
            client.ping()
            if told:
                log.info("[Worker] Redis answers again")
            return True
        except REDIS_ERRORS as exc:
            if not told:
                log.warning("[Worker] Redis unavailable (%s); waiting for it", type(exc).__name__)
                told = True
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    return False


def reconcile_forever(app, stop: threading.Event) -> None:  # noqa: ANN001
    """Every interval, if no other worker holds the lock, reconcile."""
    redis = jobs.of(app).redis
    interval = app.config["JOBS_RECONCILE_INTERVAL"]
    lock = redis_gateway.of(app).key("reconcile-lock")
    while not stop.wait(interval):
        try:
            if redis is not None and redis.set(lock, "1", nx=True, ex=max(1, int(interval * 0.9))):
                reconcile(app)
        except REDIS_ERRORS as exc:
            log.warning("[Reconciler] skipped: Redis unavailable (%s)", type(exc).__name__)
        except Exception:  # noqa: BLE001 - the loop must outlive a bad round
            log.exception("[Reconciler] round failed")


def drain_forever(app, stop: threading.Event) -> None:  # noqa: ANN001
    """Every JOBS_OUTBOX_INTERVAL seconds, enqueue what the outbox holds (it is empty while Redis is up)."""
    while not stop.wait(app.config["JOBS_OUTBOX_INTERVAL"]):
        drain_quietly(app)


def drain_quietly(app) -> None:  # noqa: ANN001
    """Drain the outbox; a failed round (the database down too) is logged and tried again later."""
    try:
        drain(app)
    except Exception:  # noqa: BLE001 - the loop must outlive a bad round
        log.exception("[Outbox] drain failed")


def main(argv: list[str] | None = None) -> int:
    """Run the worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--no-reconcile", action="store_true", help="do not run the periodic reconciler")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, note_stop)

    app = create_app()
    bind_app(app)
    runner = jobs.of(app)
    if runner.mode != "rq":
        parser.error("the worker needs REDIS_URL (without it, jobs run inside the web process)")
    queues = runner.queues()
    log.info("[Worker] listening to %s", ", ".join(q.name for q in queues))
    stop = threading.Event()
    threads = []
    if not args.burst:
        threads.append(threading.Thread(target=drain_forever, args=(app, stop), name="outbox", daemon=True))
    if not args.burst and not args.no_reconcile:
        threads.append(threading.Thread(target=reconcile_forever, args=(app, stop), name="reconciler", daemon=True))
    for thread in threads:
        thread.start()
    try:
        serve(runner, burst=args.burst)
    finally:
        stop.set()
        for thread in threads:  # a round in progress finishes before the app's clients close
            thread.join()
        shutdown(app)
    return 0


def serve(runner: Jobs, burst: bool) -> None:
    """Run RQ's worker; start it again whenever it stops because Redis went away, until told to stop.

    RQ quits its work loop on a lost Redis connection (and cannot start without Redis); a
    worker that died for that would leave every queue unserved until someone restarted it.
    """
    while True:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, note_stop)  # RQ's handlers belong to a worker that is gone
        if not wait_for_redis(runner.redis.raw):
            return
        drain_quietly(runner.app)  # Redis answers (again): what waited in the outbox goes first
        worker = LucaWorker(runner.queues(), connection=runner.redis.raw)
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
        except REDIS_ERRORS as exc:
            log.warning("[Worker] lost Redis (%s)", type(exc).__name__)
        else:
            if burst or LucaWorker.stopping:
                return
        if LucaWorker.stopping:
            return
        log.warning("[Worker] RQ stopped working (Redis lost?); starting again once Redis answers")
        time.sleep(1)


if __name__ == "__main__":
    raise SystemExit(main())
