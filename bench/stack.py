"""The real stack for benchmarks: a Redis, a PostgreSQL database, fake AI providers, gunicorn, RQ workers.

Every process is started on a spare loopback port and stopped when the Stack closes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.processes import free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
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
        self.processes: list[subprocess.Popen] = []
        self.databases: list[str] = []
        self.redis_url = ""
        self.logs: list[Path] = []

    # -- services --------------------------------------------------------------------------
    def start_redis(self) -> str:
        """A redis-server of the benchmark's own (no persistence, noeviction like production)."""
        port = free_port()
        self._spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--maxmemory-policy", "noeviction"])
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self.redis_url

    def flush_redis(self) -> None:
        """Empty the benchmark's own Redis (nothing else uses it)."""
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        subprocess.run(["redis-cli", "-p", port, "flushall"], capture_output=True, check=True)

    def create_database(self) -> str:
        """A fresh PostgreSQL database on the local server, migrated to the head."""
        name = f"luca_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.databases.append(name)
        url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        self.flask(self.env(url), "db", "upgrade")
        return url

    def start_provider(self, name: str, latency_ms: int) -> str:
        """A local OpenAI-compatible server in its own process; returns its base URL."""
        port = free_port()
        self._spawn(f"provider-{name}", [sys.executable, "-m", "luca.ai.testserver", "--port", str(port),
                                         "--latency-ms", str(latency_ms), "--name", name])
        wait_for_http(f"http://127.0.0.1:{port}/_stats")
        return f"http://127.0.0.1:{port}/v1"

    # -- Luca ------------------------------------------------------------------------------------
    def env(self, database_url: str, **settings: str) -> dict[str, str]:
        """The environment of a Luca process on this stack."""
        env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/tmp"),
               "PYTHONUNBUFFERED": "1", "SECRET_KEY": "bench-secret", "DATABASE_URL": database_url,
               "LOG_LEVEL": "WARNING", "GUNICORN_ACCESS_LOG": "", "RATE_LIMITS_ENABLED": "false",
               "TMPDIR": str(self.tmp)}
        env.update(settings)
        return env

    def flask(self, env: dict[str, str], *args: str) -> str:
        """Run a `flask --app wsgi` command; return its output."""
        result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start_gunicorn(self, env: dict[str, str], app: str = "wsgi:app") -> tuple[str, subprocess.Popen]:
        """gunicorn with the project's config; returns its base URL and process."""
        port = free_port()
        process = self._spawn("gunicorn", [str(BIN / "gunicorn"), app, "-c", "gunicorn.conf.py"],
                              env={**env, "PORT": str(port), "HOST": "127.0.0.1"})
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/healthz")
        return base, process

    def start_worker(self, env: dict[str, str]) -> subprocess.Popen:
        """An RQ worker (python worker.py)."""
        return self._spawn("worker", [sys.executable, "worker.py"], env=env)

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process (SIGTERM, then SIGKILL after 20 s)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
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
    """Control of a provider server process over its HTTP switches."""

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
