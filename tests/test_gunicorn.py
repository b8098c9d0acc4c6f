"""Luca under gunicorn with the project's config: streamed answers arrive as they are written, and
no header a client sends moves the page's URLs or forges a line in the access log."""
from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import flask_command, gunicorn, luca_env


@pytest.mark.slow
def test_streamed_deltas_reach_the_client_before_the_answer_is_finished(tmp_path: Path, servers) -> None:
    primary, _ = servers
    primary.configure(chunk_delay_ms=100)
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", WEB_CONCURRENCY="2",
                   AI_PROVIDERS="primary", PRIMARY_BASE_URL=primary.url, PRIMARY_MODEL="primary-model")
    flask_command(env, "db", "upgrade")
    token = flask_command(env, "users", "create", "gunicorn@example.com").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    with gunicorn(env) as (base, _process):
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/api/conversations", body=json.dumps({}), headers=headers)
        conversation = json.loads(conn.getresponse().read())
        conn.request("POST", f"/api/conversations/{conversation['id']}/messages",
                     body=json.dumps({"content": "stream through gunicorn please", "stream": True}), headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")

        seen_first_delta_while_streaming = None
        events = []
        buffer = b""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                name = block.split(b"\n")[0].removeprefix(b"event: ").decode()
                events.append(name)
                if name == "delta" and seen_first_delta_while_streaming is None:
                    # The provider is still writing the answer when its first piece reaches us.
                    seen_first_delta_while_streaming = primary.stats()["completed"] == 0
        conn.close()

    assert events[0] == "start" and events[-1] == "end" and events.count("delta") >= 3
    assert seen_first_delta_while_streaming is True


@dataclass
class Served:
    """A gunicorn with the project's config and its access log file."""

    host: str
    port: int
    access_log: Path
    process: subprocess.Popen

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        """GET path with exactly these headers (names as given); the status and the body."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest("GET", path)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gunicorn on a migrated SQLite file, writing its access log to a file."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp / 'luca.db'}", WEB_CONCURRENCY="1",
                   GUNICORN_ACCESS_LOG=str(tmp / "access.log"))
    flask_command(env, "db", "upgrade")
    with gunicorn(env) as (base, process):
        host, port = base.removeprefix("http://").split(":")
        yield Served(host, int(port), tmp / "access.log", process)


def page_urls(html: str) -> list[str]:
    """The URLs of the page's scripts and style sheets."""
    return re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("header", ["SCRIPT_NAME", "Script_Name", "script-name", "X-Forwarded-Prefix"])
def test_a_client_sent_script_name_changes_nothing_in_the_page(served: Served, header: str) -> None:
    # The peer (127.0.0.1) is in FORWARDED_ALLOW_IPS: not even a trusted proxy may set SCRIPT_NAME.
    status, html = served.get("/", {header: "//evil.example"})
    assert status == 200
    assert page_urls(html) and all(url.startswith("/static/web/") for url in page_urls(html)), page_urls(html)
    # Under the prefix it claims, the page is not served with URLs pointing there either.
    status, html = served.get("//evil.example/", {header: "//evil.example"})
    assert "evil.example" not in html or status != 200


def access_log_lines(served: Served, probe: str) -> list[str]:
    """The access log's lines about the request carrying probe (waiting up to 10 s for one to be written)."""
    deadline = time.monotonic() + 10
    while probe not in served.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return [line for line in served.access_log.read_text().splitlines() if probe in line]


def sign_in_with_a_forged_line(served: Served) -> tuple[str, str]:
    """A dashboard request whose Basic user name holds a newline and a line of its own; the probe and that line."""
    probe = uuid.uuid4().hex
    forged = f"{probe} 2024-01-01 INFO gunicorn.access forged"  # no ":", which ends a Basic user name
    credentials = base64.b64encode(f"ops@example.com\n{forged}\r\x1b[2K:luca_wrong".encode()).decode()
    status, _ = served.get(f"/admin/rq/{probe}", {"Authorization": f"Basic {credentials}"})
    assert status == 401
    return probe, forged


def test_a_basic_user_name_with_a_newline_leaves_one_access_log_line(served: Served) -> None:
    probe, forged = sign_in_with_a_forged_line(served)
    lines = access_log_lines(served, probe)
    assert len(lines) == 1, lines
    assert f"ops@example.com\\n{forged}\\r\\x1b[2K" in lines[0]
    assert f"/admin/rq/{probe}" in lines[0]


def worker_pids(served: Served) -> set[str]:
    """The pids of the gunicorn master's children."""
    pid = served.process.pid
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_the_access_log_stays_escaped_after_gunicorn_reloads(served: Served) -> None:
    before = worker_pids(served)
    served.process.send_signal(signal.SIGHUP)  # the master makes its log handlers anew, then new workers
    deadline = time.monotonic() + 30
    while not (worker_pids(served) and worker_pids(served).isdisjoint(before)):
        assert time.monotonic() < deadline, "gunicorn did not replace its workers"
        time.sleep(0.1)
    probe, _ = sign_in_with_a_forged_line(served)
    assert len(access_log_lines(served, probe)) == 1
