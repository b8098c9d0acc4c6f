"""The processes a fault drill runs against, each of its own, on spare ports, so the drill may kill them.

Built on the shared launcher (tests/support/processes.py: ``Process``, ``RedisServer``, ``Gunicorn``,
``Worker``), plus what only the drills need:

- ``PostgresServer``: a PostgreSQL instance of its own (initdb in a temporary directory; pg_ctl as
  the ``postgres`` OS user when running as root, since PostgreSQL refuses to run as root), which a
  drill stops and starts;
- ``Supervisor``: restarts a worker that exited by itself, as a deployment's supervisor would;
- ``Stack``: all of them plus two fake providers (tests/support/provider.py), "primary" and "backup".

Everything started is registered and stopped at exit, even when a drill fails half-way.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self

from tests.support.apps import provider_env
from tests.support.processes import Gunicorn, RedisServer, Worker, flask_command, free_port, luca_env, track
from tests.support.provider import FakeProvider

DATABASE = "luca"
DRILL_USER = "drill@luca.local"


# -- finding the binaries -------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries (LUCA_PG_BIN, else the newest /usr/lib/postgresql/*/bin)."""
    candidates = [os.environ.get("LUCA_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    which = shutil.which("pg_ctl")
    candidates.append(str(Path(which).parent) if which else "")
    return next((Path(c) for c in candidates if c and (Path(c) / "initdb").exists()
                 and (Path(c) / "pg_ctl").exists()), None)


def missing_binaries() -> str | None:
    """Why the drills cannot run here (no PostgreSQL server binaries, no redis-server), or None."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; set LUCA_PG_BIN"
    if shutil.which("redis-server") is None:
        return "redis-server not found on PATH"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to start PostgreSQL as the postgres user"
    return None


# -- processes ----------------------------------------------------------------------------------------
class Supervisor:
    """Restarts a worker that exited by itself, as systemd's Restart=always or a PaaS would, and counts it."""

    def __init__(self, workers: list[Worker], delay: float = 1.0) -> None:
        self.workers = workers  # the stack's list: workers started later are watched too
        self.delay = delay
        self.restarts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for worker in list(self.workers):
                if worker.wanted and not worker.running() and not self._stop.wait(self.delay):
                    self.restarts.append(f"{worker.log_path.name} exited with {worker.popen.returncode}")
                    worker.start()

    def start(self) -> Supervisor:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before the workers are stopped on purpose)."""
        self._stop.set()
        self._thread.join(timeout=10)


# -- PostgreSQL -------------------------------------------------------------------------------------
class PostgresServer:
    """A PostgreSQL instance of the drill's own: its data directory, port and socket directory in root."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port or free_port()
        self.bin = postgres_bin()
        assert self.bin is not None, missing_binaries()
        self.running = False

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the drill's database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def dsn(self, database: str = DATABASE) -> str:
        """A libpq connection string (psycopg)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=5"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool, as the postgres OS user when we are root."""
        assert self.bin is not None
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, str(self.bin / tool), *args], capture_output=True, text=True,
                                timeout=timeout, cwd="/", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def init(self) -> None:
        """initdb (trust authentication, superuser postgres) into a directory the postgres user owns."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """pg_ctl start, listening on 127.0.0.1 only; wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   f"-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", options,
                  "-w", "-t", "60", "start")
        self.running = True
        track(self, True)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` rolls back open transactions, `immediate` is a crash (recovery at the next start)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            self.running = False
        track(self, False)

    def kill(self) -> None:
        """Stop at once, like a crash: connections are cut, nothing is shut down cleanly."""
        self.stop("immediate")

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()

    def create_database(self) -> None:
        """CREATE DATABASE luca."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query on the drill's database and return its rows."""
        import psycopg

        with psycopg.connect(self.dsn()) as conn:
            return conn.execute(sql, params).fetchall()

    def __enter__(self) -> Self:
        """initdb, start, create the database."""
        self.init()
        self.start()
        self.create_database()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop at once (the data is thrown away)."""
        self.stop("immediate")


# -- the whole stack ----------------------------------------------------------------------------------
# What every drill's Luca processes share: short reconciler rounds, budgets no drill reaches.
BASE_SETTINGS = {
    "DATABASE_CONNECT_TIMEOUT": "2",
    "RATE_LIMIT_MESSAGES": "100000 per minute",
    "RATE_LIMIT_UPLOADS": "100000 per hour",
    "AI_MAX_CONCURRENT_PER_USER": "1000",  # the drills' clients are all one user
    "JOBS_RECONCILE_INTERVAL": "2",
    "JOBS_RECONCILE_GRACE": "2",
    "JOBS_RETRY_BACKOFF": "1",
    "AI_TIMEOUT": "10",
    "AI_CONNECT_TIMEOUT": "2",
    "GUNICORN_ACCESS_LOG": "",
    "LOG_LEVEL": "INFO",
}


class Stack:
    """Everything one drill runs against: PostgreSQL, Redis, two providers, gunicorn and RQ workers of its own."""

    def __init__(self, name: str, settings: dict[str, str] | None = None, *, web_workers: int = 2,
                 worker: bool = True, supervise: bool = False, provider_latency_ms: int = 20) -> None:
        self.name = name
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self.web_workers = web_workers
        self.start_worker_at_once = worker
        self.provider_latency_ms = provider_latency_ms
        self.workers: list[Worker] = []
        self.supervisor = Supervisor(self.workers) if supervise else None
        self._exit = ExitStack()

    def __enter__(self) -> Self:
        """Start everything; on a failure, stop what was started."""
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop everything, newest first, and remove the temporary directory."""
        self._exit.close()

    def _start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"luca-faults-{self.name}-"))
        self.dir.chmod(0o755)  # the postgres user must reach its data directory inside
        if not os.environ.get("LUCA_FAULTS_KEEP"):  # keep the logs and data of a drill to look at them
            self._exit.callback(shutil.rmtree, self.dir, ignore_errors=True)
        self.postgres = self._exit.enter_context(PostgresServer(self.dir / "pg"))
        self.redis = self._exit.enter_context(RedisServer(self.dir / "redis.log"))
        self.primary = self._exit.enter_context(FakeProvider(name="primary", latency_ms=self.provider_latency_ms))
        self.backup = self._exit.enter_context(FakeProvider(name="backup", latency_ms=self.provider_latency_ms))
        self.env = luca_env(DATABASE_URL=self.postgres.url, REDIS_URL=self.redis.url, TMPDIR=str(self.dir),
                            **provider_env(self.primary, self.backup), **self.settings)
        flask_command(self.env, "db", "upgrade")
        self.web = Gunicorn(self.env, self.dir / "gunicorn.log", workers=self.web_workers).start()
        self._exit.callback(self.stop_processes)
        if self.start_worker_at_once:
            self.start_worker()
        self.token = flask_command(self.env, "users", "create", DRILL_USER, "--admin").strip().splitlines()[-1]
        self.web.ready()
        for worker in self.workers:
            worker.ready()
        if self.supervisor is not None:  # stopped before the workers (an ExitStack unwinds newest first)
            self._exit.callback(self.supervisor.start().stop)

    def jobs_running(self, queues: tuple[str, ...] = ("titles", "files")) -> int:
        """How many RQ jobs a worker is running now (RQ's started-job registries)."""
        from redis import Redis
        from rq.registry import StartedJobRegistry

        with Redis.from_url(self.redis.url, socket_timeout=1) as client:
            return sum(len(StartedJobRegistry(name, connection=client).get_job_ids(cleanup=False))
                       for name in queues)

    def start_worker(self, *args: str, **settings: str) -> Worker:
        """Start one more RQ worker (python worker.py ARGS) with extra settings."""
        log = self.dir / f"worker-{len(self.workers) + 1}.log"
        worker = Worker({**self.env, **settings}, log, *args).start()
        self.workers.append(worker)
        return worker

    def stop_processes(self) -> None:
        """SIGTERM gunicorn and every worker at once, then wait for each (they shut down gracefully)."""
        processes = [self.web, *self.workers]
        for process in processes:
            process.wanted = False
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.stop()

    def logs(self, lines: int = 40) -> str:
        """The last warnings, errors and tracebacks of gunicorn and of every worker, for a failure report."""
        parts = []
        for process in (self.web, *self.workers):
            kept = [line for line in process.output().splitlines() if " INFO " not in line and " DEBUG " not in line]
            parts.append(f"   -- {process.log_path.name}, last {lines} lines that are not INFO:\n"
                         + "\n".join(kept[-lines:]))
        return "\n".join(parts)
