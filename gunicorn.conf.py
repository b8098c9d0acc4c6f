"""Gunicorn settings for Luca: gthread workers, timeouts that suit streamed answers, shared metrics."""
import atexit
import glob
import os
import shutil
import tempfile

from gunicorn.glogging import Logger

# "<pid> <path>" of the temporary metrics directory a master made for itself.
METRICS_DIR_OWNER = "LUCA_METRICS_DIR_OWNER"


def make_metrics_dir() -> None:
    """Set PROMETHEUS_MULTIPROC_DIR for luca/metrics.py: the operator's directory, else a fresh temporary one.

    prometheus_client picks its multiprocess mode when it is first imported, and preload_app
    imports the app in this master right after this file is read, so the variable is set now;
    forked workers inherit it. A temporary directory belongs to the master that made it and is
    removed when that master exits (a USR2 successor makes its own).
    """
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owner, _, owned = os.environ.get(METRICS_DIR_OWNER, "").partition(" ")
    if current and current != owned:
        os.makedirs(current, exist_ok=True)
        return
    if current and owner == str(os.getpid()):
        return  # this master is reloading its configuration
    path = tempfile.mkdtemp(prefix="luca-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ[METRICS_DIR_OWNER] = f"{os.getpid()} {path}"
    atexit.register(remove_metrics_dir, path, os.getpid())


def remove_metrics_dir(path: str, creator: int) -> None:
    """Remove a temporary metrics directory when its master exits (forked workers inherit this handler)."""
    if os.getpid() == creator:
        shutil.rmtree(path, ignore_errors=True)


make_metrics_dir()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
# Chosen from `python -m bench concurrency` (docs/BENCHMARKS.md, "Workers and threads"; two CPUs,
# 100 ms provider, overhead p50 / p99, 2026-12-04): at 10 clients 2x32 28 / 98 ms, 2x64 34 / 107,
# 4x16 37 / 98, 1x64 41 / 104; at 50 clients 2x32 150 / 543, 2x64 144 / 399, 4x16 139 / 352, 1x64
# 345 / 664; with fewer threads than clients (an earlier run) 2x8 599 / 1,683 and 4x4 1,332 / 3,273.
# A send holds its thread for the whole provider call, so workers x threads must cover the answers
# in flight; one interpreter's GIL falls behind at 50 (1x64), more workers than CPUs buys nothing.
# One worker per CPU, 32 threads each. Every thread may hold a database connection
# (DATABASE_POOL_SIZE follows GUNICORN_THREADS): workers x threads must fit the database's limit.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not processes, carry concurrency: a request waiting on an AI provider holds a
# thread, not a whole worker.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# A streamed answer can take minutes; the worker heartbeat still catches a hung process.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "180"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = True
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = 500
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"


class LucaLogger(Logger):
    """gunicorn's logger whose handlers redact and escape every line, also those it makes anew on a reload (HUP)."""

    def setup(self, cfg):  # noqa: ANN001, ANN201 - gunicorn's signature
        """Set gunicorn's handlers up, then give them Luca's filter (and format)."""
        super().setup(cfg)
        from luca.logs import guard_gunicorn_logs

        guard_gunicorn_logs()


logger_class = LucaLogger

# Several gunicorns may share a host (web + benchmarks); the per-user control socket would clash.
control_socket_disable = True
# gunicorn believes X-Forwarded-Proto (the scheme) only from these peers; the client's address is
# the app's business (TRUSTED_PROXY_HOPS, werkzeug's ProxyFix).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# No header sets SCRIPT_NAME or PATH_INFO, not even from an allowed peer: a client's SCRIPT_NAME
# would become the prefix of every URL a page links to. Headers with "_" are dropped.
forwarder_headers = ""
header_map = "drop"


def post_fork(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Give each worker its own database connections and provider clients (the preloaded app's are not fork-safe),
    and open its connections before the first request does."""
    from luca import warm_up
    from luca.extensions import reopen_after_fork
    from wsgi import app

    reopen_after_fork(app)
    warm_up(app)


def on_starting(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Start metrics from zero: remove the files an earlier run left in an operator's PROMETHEUS_MULTIPROC_DIR."""
    if server.master_pid:  # a USR2 upgrade: the old master's workers still write there
        return
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Tell prometheus_client a worker is gone (its counts stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)



def worker_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Release what the worker's app holds: in-process jobs finish, threads stop, clients and connections close."""
    from luca.extensions import shutdown
    from wsgi import app

    shutdown(app)
