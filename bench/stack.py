"""The real stack for benchmarks: a Redis, a PostgreSQL database, fake AI providers, gunicorn, RQ workers.

Every process is started with the shared launcher (tests/support/processes.py) on a spare loopback
port and stopped when the Stack closes. The providers run in processes of their own
(``python -m tests.support.provider``), so that their threads never compete with the benchmark's
clients for this interpreter.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from tests.support import ROOT
from tests.support.processes import (
    BIN,
    Gunicorn,
    Process,
    RedisServer,
    Worker,
    flask_command,
    free_port,
    luca_env,
    wait_for_http,
)

__all__ = ["BIN", "ROOT", "Provider", "Stack", "http_json"]

P = TypeVar("P", bound=Process)
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 60) -> Any:
    """One JSON request; returns the decoded body (raises on HTTP errors)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


class Stack(AbstractContextManager["Stack"]):
    """The processes of one benchmark run; everything is stopped on close()."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="luca-bench-"))
        self.processes: list[Process] = []
        self.databases: list[str] = []
        self.redis: RedisServer | None = None

    # -- services --------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        """The URL of the benchmark's own Redis."""
        assert self.redis is not None, "start_redis() first"
        return self.redis.url

    def start_redis(self) -> str:
        """A redis-server of the benchmark's own (no persistence, noeviction like production)."""
        self.redis = RedisServer(self._log("redis")).start()
        self.processes.append(self.redis.process)
        return self.redis.url

    def flush_redis(self) -> None:
        """Empty the benchmark's own Redis (nothing else uses it)."""
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            client.flushall()

    def create_database(self) -> str:
        """A fresh PostgreSQL database on the local server, migrated to the head."""
        name = f"luca_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.databases.append(name)
        url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        flask_command(self.env(url), "db", "upgrade", timeout=600)
        return url

    def start_provider(self, name: str, latency_ms: int) -> str:
        """A fake provider in its own process; returns its base URL."""
        port = free_port()
        self._start(Process(f"provider-{name}", [sys.executable, "-m", "tests.support.provider", "--port", str(port),
                                                 "--latency-ms", str(latency_ms), "--name", name],
                            None, self._log(f"provider-{name}")))
        wait_for_http(f"http://127.0.0.1:{port}/_stats")
        return f"http://127.0.0.1:{port}/v1"

    # -- Luca ------------------------------------------------------------------------------------
    def env(self, database_url: str, **settings: str) -> dict[str, str]:
        """The environment of a Luca process on this stack."""
        return luca_env(SECRET_KEY="bench-secret", DATABASE_URL=database_url, LOG_LEVEL="WARNING",
                        GUNICORN_ACCESS_LOG="", RATE_LIMITS_ENABLED="false", TMPDIR=str(self.tmp), **settings)

    def start_gunicorn(self, env: dict[str, str], app: str = "wsgi:app") -> Gunicorn:
        """gunicorn with the project's config, answering."""
        return self._start(Gunicorn(env, self._log("gunicorn"), app)).answering()

    def start_worker(self, env: dict[str, str]) -> Worker:
        """An RQ worker (python worker.py)."""
        return self._start(Worker(env, self._log("worker")))

    def stop(self, process: Process) -> None:
        """Stop one process (SIGTERM, then SIGKILL after 20 s)."""
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def _log(self, name: str) -> Path:
        return self.tmp / f"{name}-{len(list(self.tmp.glob('*.log')))}.log"

    def _start(self, process: P) -> P:
        self.processes.append(process.start())
        return process

    def close(self) -> None:
        """Stop every process, drop the databases, remove the temporary directory."""
        for process in reversed(list(self.processes)):
            self.stop(process)
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


class Provider:
    """Control of a provider process over its HTTP switches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.base = url.removesuffix("/v1")

    def configure(self, **settings: Any) -> None:
        """Change the server's behaviour (latency, statuses ...)."""
        http_json("POST", f"{self.base}/_control", settings)

    def stats(self) -> dict[str, Any]:
        """Requests received, most at once ..."""
        return http_json("GET", f"{self.base}/_stats")

    def reset(self) -> None:
        """Back to the defaults; zero the counts."""
        http_json("POST", f"{self.base}/_reset", {})
