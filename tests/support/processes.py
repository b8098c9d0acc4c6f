"""The one launcher of real processes for tests, fault drills and benchmarks.

- ``Process``: a child process whose stdout and stderr go to a log file; stopped with SIGTERM, a
  wait, then SIGKILL; ``kill()`` is SIGKILL to its children first (an RQ work horse, gunicorn's
  workers), then to it;
- ``RedisServer``: a redis-server of its own, without persistence, that can be killed -9 and
  started again on its port;
- ``Gunicorn``: gunicorn with the project's config (gunicorn.conf.py) on a spare port;
  ``gunicorn(env)`` runs one for the length of a ``with`` block;
- ``Worker``: an RQ worker (python worker.py); ``worker_burst(env)`` runs one until the queues are empty;
- ``flask_command(env, ...)``: one ``flask --app wsgi`` command; ``luca_env()``: the environment of them all.

Everything started is stopped at interpreter exit, even when a test or a drill fails half-way.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, Self

from tests.support import ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def luca_env(**settings: str) -> dict[str, str]:
    """An environment for a Luca process: this interpreter's PATH, no inherited Luca settings."""
    env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "PYTHONUNBUFFERED": "1",
           "HOME": os.environ.get("HOME", "/tmp"), "SECRET_KEY": "test-secret"}
    env.update(settings)
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll check() until it returns something true, and return that; TimeoutError naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(every)
    return value


def http_status(url: str) -> int:
    """The status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except OSError:
        return 0


def wait_for_http(url: str, timeout: float = 30) -> None:
    """Poll url until it answers at all."""
    wait_until(lambda: http_status(url), timeout, f"an answer from {url}")


def flask_command(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `flask --app wsgi ARGS` and return its output; raise with the output when it fails."""
    result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def worker_burst(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run `python worker.py --burst ARGS` until the queues are empty; its exit status and output."""
    return subprocess.run([sys.executable, "worker.py", "--burst", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- stopping whatever is still running at exit ----------------------------------------------------
class Stoppable(Protocol):
    """Anything the exit handler can stop."""

    def stop(self) -> None:
        """Stop it; harmless when it is already stopped."""


_LIVE: list[Stoppable] = []
_LIVE_LOCK = threading.Lock()


def track(thing: Stoppable, alive: bool) -> None:
    """Remember (or forget) something to stop at interpreter exit."""
    with _LIVE_LOCK:
        if alive and thing not in _LIVE:
            _LIVE.append(thing)
        elif not alive and thing in _LIVE:
            _LIVE.remove(thing)


@atexit.register
def stop_everything() -> None:
    """Stop every process left running (a crash, Ctrl-C), newest first."""
    while _LIVE:
        thing = _LIVE[-1]
        with suppress(Exception):  # one that cannot be stopped must not keep the others running
            thing.stop()
        track(thing, False)


# -- processes -------------------------------------------------------------------------------------
class Process:
    """A child process (by its id) whose stdout and stderr go to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log
        self.popen: subprocess.Popen | None = None
        self.wanted = False  # started and not stopped or killed on purpose since

    def start(self) -> Self:
        """Start it (again); output is appended to the log."""
        self.wanted = True
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        track(self, True)
        return self

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status, None while it runs."""
        return None if self.popen is None else self.popen.poll()

    def running(self) -> bool:
        """Whether it has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send a signal to this process only."""
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to exit and return its status (subprocess.TimeoutExpired after timeout)."""
        assert self.popen is not None, f"{self.name} was never started"
        status = self.popen.wait(timeout=timeout)
        track(self, False)
        return status

    def children(self) -> set[int]:
        """The ids of its direct children."""
        if not self.running():
            return set()
        found = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False)
        return {int(p) for p in found.stdout.split()}

    def kill(self) -> None:
        """SIGKILL its children first (an RQ work horse, gunicorn workers), then it; wait for it."""
        self.wanted = False
        if not self.running():
            return
        for child in self.children():
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.popen.kill()
        self.wait()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait; SIGKILL after timeout."""
        self.wanted = False
        if self.popen is None:
            return
        if self.running():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.wait()

    def output(self) -> str:
        """Everything it wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Gunicorn(Process):
    """gunicorn with the project's config (gunicorn.conf.py) on its own port; no access log unless env names one."""

    def __init__(self, env: dict[str, str], log: Path, app: str = "wsgi:app", *extra: str,
                 workers: int | None = None) -> None:
        self.port = free_port()
        env = {"GUNICORN_ACCESS_LOG": "", **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        if workers is not None:
            env["WEB_CONCURRENCY"] = str(workers)
        super().__init__("gunicorn", [str(BIN / "gunicorn"), app, "-c", "gunicorn.conf.py", *extra], env, log)

    @property
    def base(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def answering(self, path: str = "/healthz", timeout: float = 30) -> Self:
        """Wait until path answers at all (a worker has loaded the app); raise with the log if gunicorn exits."""
        wait_until(lambda: http_status(self.base + path) or not self.running(), timeout, f"an answer from {path}")
        if not self.running():
            raise RuntimeError(f"gunicorn exited at start:\n{self.output()[-3000:]}")
        return self

    def ready(self, timeout: float = 60) -> None:
        """Wait until /readyz answers 200 (the database answers, at the migration head)."""
        wait_until(lambda: http_status(self.base + "/readyz") == 200, timeout, "gunicorn ready")

    def hup(self) -> None:
        """SIGHUP to the master: new workers start, the old ones finish their requests and exit."""
        self.send_signal(signal.SIGHUP)

    def worker_pids(self) -> set[int]:
        """The current worker processes."""
        return self.children()

    def troubles(self) -> list[str]:
        """The master's lines about workers that timed out, crashed or were killed."""
        signs = ("WORKER TIMEOUT", "exited with code", "was sent", "terminated due to signal", "failed to boot")
        return [line for line in self.output().splitlines() if any(sign in line for sign in signs)]


@contextmanager
def gunicorn(env: dict[str, str], *extra: str) -> Iterator[tuple[str, Gunicorn]]:
    """Run gunicorn with the project's config on a free port for the block; yield its base URL and process."""
    with tempfile.TemporaryDirectory(prefix="luca-gunicorn-") as tmp:
        server = Gunicorn(env, Path(tmp) / "gunicorn.log", "wsgi:app", *extra).start()
        try:
            server.answering("/api/openapi.json")
            yield server.base, server
        finally:
            server.stop()


class Worker(Process):
    """An RQ worker: python worker.py ARGS."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        super().__init__("worker", [sys.executable, "worker.py", *args], env, log)

    def ready(self, timeout: float = 60) -> None:
        """Wait until it listens to its queues."""
        wait_until(lambda: "[Worker] listening to" in self.output() or not self.running(), timeout, "worker start")
        if not self.running():
            raise RuntimeError(f"the worker exited at start:\n{self.output()[-3000:]}")


# -- Redis -----------------------------------------------------------------------------------------
class RedisServer:
    """A redis-server of its own on a fixed port, without persistence: kill -9 loses everything, like a crash."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process = Process("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
                               None, log)

    @property
    def url(self) -> str:
        """Its URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start it on its port and wait for PING."""
        self.process.start()
        wait_until(self.answers, 10, f"redis-server on port {self.port}", every=0.05)
        return self

    def answers(self) -> bool:
        """Whether it answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: every key is gone."""
        self.process.kill()

    def restart(self) -> None:
        """Start it again on the same port (empty)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop it."""
        self.process.stop()

    def __enter__(self) -> Self:
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()
