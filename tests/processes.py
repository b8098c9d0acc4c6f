"""Start the real processes (gunicorn, flask commands) for tests that need them."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def flask_command(env: dict[str, str], *args: str) -> str:
    """Run `flask --app wsgi ARGS` and return its output; fail loudly."""
    result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_for_http(url: str, timeout: float = 30) -> None:
    """Poll url until it answers at all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def gunicorn(env: dict[str, str], *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run gunicorn with the project's config on a free port; yield its base URL and process.

    No access log unless env names one in GUNICORN_ACCESS_LOG (a file: nobody reads the pipe
    while gunicorn runs).
    """
    port = free_port()
    env = {"GUNICORN_ACCESS_LOG": "", **env, "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen([str(BIN / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py", *extra],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/api/openapi.json")
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
