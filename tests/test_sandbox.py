"""The document sandbox: extraction in a confined child process, and hostile uploads against real processes.

The hostile files are the issue's: a 1.7 MB DOCX holding 47 MB of empty paragraphs (python-docx took
1.7 GB for it) and a 33 KB PDF of 200 pages sharing one stream of 160,000 drawing operators (it held a
worker for its whole job timeout and was then called "damaged").
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rq import Worker

from config import Config
from luca import sandbox
from luca.documents import DocumentError, Limits, extract
from luca.extensions import jobs
from luca.sandbox import extract_isolated
from tests.support.api import create_user, file_status, multipart, signed, upload
from tests.support.documents import (
    PDF,
    WORD_NAMESPACE,
    empty_paragraphs_docx,
    encrypt_pdf,
    heavy_pdf,
    make_docx,
    make_xlsx,
    make_zip,
    shared_stream_pdf,
)
from tests.support.jobs import Stack
from tests.support.processes import gunicorn, luca_env

CPU_SECONDS = Config.DOCUMENT_CPU_SECONDS
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "paragraphs.docx": (empty_paragraphs_docx, "The file is too complex: more than 2,000,000 XML elements."),
    "figures.pdf": (shared_stream_pdf, "The file is too complex: more than 1,000,000 drawing operations."),
}
# How much a process may grow while it hands the two hostile files to the sandbox: it holds each file
# (under 2 MB) a few times over (request body, database parameter, the job's row, the child's input) and
# the allocator keeps some of that; what a parser would need never reaches it (in-process, the DOCX alone
# grew a web process to 445 MB). DOCUMENT_MEMORY_MB, what one child may take, is a generous ceiling.
GROWTH_BOUND_MB = 64


def documents_children() -> list[int]:
    """The sandbox children of this process now."""
    return [pid for pid in children(os.getpid()) if b"documents.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def children(pid: int) -> set[int]:
    """The ids of a process's child processes now."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            pass
    return found


def peak_memory_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM in /proc/<pid>/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


# -- the child ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: PDF, make_docx, make_xlsx, lambda: b"account,debit\ncash,100\nsales,0\n"],
                         ids=["pdf", "docx", "xlsx", "csv"])
def test_the_sandbox_extracts_what_the_parser_does_blocks_and_progress_included(make: Callable[[], bytes]) -> None:
    data = make()
    isolated_progress: list[float] = []
    local_progress: list[float] = []
    isolated = extract_isolated(data, progress=isolated_progress.append)
    assert isolated == extract(data, progress=local_progress.append)
    assert isolated.blocks and isolated_progress == local_progress
    assert documents_children() == []


def test_a_document_error_comes_back_as_itself() -> None:
    with pytest.raises(DocumentError) as info:
        extract_isolated(encrypt_pdf(PDF, "secret"))
    assert info.value.code == "encrypted" and "password" in info.value.reason


def big_text_node_docx() -> bytes:
    """A DOCX whose one paragraph holds 9.6 MB of text (random, so within the ZIP ratio): libxml2 needs more."""
    text = random.Random(9).randbytes(4_800_000).hex()
    body = f"<w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body>"
    return make_zip({"word/document.xml": f'<w:document xmlns:w="{WORD_NAMESPACE}">{body}</w:document>'.encode()})


@pytest.mark.parametrize("make", [lambda: b"word " * 1_900_000, big_text_node_docx], ids=["python", "libxml2"])
def test_a_child_over_its_memory_limit_reports_memory(make: Callable[[], bytes]) -> None:
    """About 40 MB of the 50 are the interpreter, lxml and pypdf; reading 9.5 MB of text needs more.

    Python raises MemoryError; libxml2 reports a failed allocation as a parse error, never "damaged".
    """
    data = make()
    assert len(extract_isolated(data).text) == Limits().max_chars
    with pytest.raises(DocumentError) as info:
        extract_isolated(data, Limits(memory_mb=50))
    assert info.value.code == "out_of_memory"
    assert info.value.reason == "The file needs more than 50 MB of memory to read."


def test_a_child_over_its_cpu_limit_reports_a_timeout() -> None:
    """30 heavy pages take about 9 s of CPU; the child gets 1 s."""
    started = time.monotonic()
    with pytest.raises(DocumentError) as info:
        extract_isolated(heavy_pdf(30), Limits(cpu_seconds=1))
    assert info.value.code == "timeout"
    assert info.value.reason == "The file ran out of its 1 s of processing time."
    assert time.monotonic() - started < 1 + sandbox.WALL_GRACE_SECONDS
    assert documents_children() == []


def test_a_child_still_running_at_the_wall_clock_deadline_is_killed_as_a_timeout(monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "WALL_GRACE_SECONDS", 0.5 - CPU_SECONDS)  # the deadline: 0.5 s after the start
    with pytest.raises(DocumentError) as info:
        extract_isolated(heavy_pdf(30))
    assert info.value.reason == f"The file ran out of its {CPU_SECONDS} s of processing time."
    assert documents_children() == []


def test_a_child_killed_by_sigkill_reports_memory() -> None:
    """SIGKILL comes from the kernel's OOM killer (a CPU-time overrun gets SIGXCPU first)."""
    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(extract_isolated, heavy_pdf(30))
        deadline = time.monotonic() + 30
        while not (running := documents_children()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.01)
        os.kill(running[0], signal.SIGKILL)
        with pytest.raises(DocumentError) as info:
            outcome.result(timeout=30)
    assert info.value.code == "out_of_memory"


def test_a_progress_callback_error_stops_the_child_and_propagates() -> None:
    def fail(_: float) -> None:
        raise RuntimeError("the database is down")

    with pytest.raises(RuntimeError, match="the database is down"):
        extract_isolated(heavy_pdf(30), progress=fail)
    assert documents_children() == []


# -- hostile uploads against real processes -------------------------------------------------------


def wait_until_failed(status: Callable[[], dict[str, Any]], timeout: float) -> tuple[dict[str, Any], float]:
    """Poll a file's status until it is final; return it and the seconds it took."""
    started = time.monotonic()
    while (current := status())["status"] not in ("ready", "failed"):
        assert time.monotonic() - started < timeout, current
        time.sleep(0.1)
    return current, time.monotonic() - started


class Http:
    """JSON over HTTP to a running Luca, signed with one token."""

    def __init__(self, base: str, token: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> dict[str, Any]:
        """Send a request; return the JSON answer."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        assert response.status < 300, answer
        return answer


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hostile_uploads_fail_naming_their_limit_and_the_web_process_stays_small(app_factory, database_url) -> None:
    """The embedded mode: the jobs run on the web process's threads, the parsing in sandbox children."""
    _, token = create_user(app_factory(), "alice@example.com")
    files = {name: make() for name, (make, _) in HOSTILE.items()}
    env = luca_env(DATABASE_URL=database_url, WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    with gunicorn(env) as (base, master):
        (web,) = children(master.pid)
        client = Http(base, token)
        conversation = client.call("POST", "/api/conversations", json.dumps({"title": "Hostile"}).encode())
        baseline = peak_memory_mb(web)
        outcomes = {}
        for name, data in files.items():
            body, content_type = multipart({"file": (name, data)})
            file_id = client.call("POST", f"/api/conversations/{conversation['id']}/files", body, content_type)["id"]
            outcomes[name] = wait_until_failed(lambda: client.call("GET", f"/api/files/{file_id}"), 60)
        peak = peak_memory_mb(web)
        client.connection.close()
    for name, (status, seconds) in outcomes.items():
        assert (status["status"], status["error"]) == ("failed", HOSTILE[name][1])
        assert seconds < CPU_SECONDS + 5, (name, seconds)
    assert peak - baseline < GROWTH_BOUND_MB, (baseline, peak)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_hostile_uploads_fail_naming_their_limit_and_the_worker_stays_small(stack: Stack) -> None:
    """RQ mode: the worker forks a work horse per job, which hands the file to a sandbox child."""
    api = signed(stack.app)
    conversation = api.new_conversation()
    files = {name: make() for name, (make, _) in HOSTILE.items()}
    worker = stack.start_worker()
    peaks: dict[int, float] = {}
    watching = threading.Event()

    def watch() -> None:  # the work horses live for one job each: sample them while they run
        while not watching.wait(0.02):
            for pid in children(worker.pid) | {worker.pid}:
                try:
                    peaks[pid] = max(peaks.get(pid, 0), peak_memory_mb(pid))
                except (OSError, AssertionError):  # it ended meanwhile
                    pass

    watcher = threading.Thread(target=watch)
    try:
        deadline = time.monotonic() + 60
        with stack.app.app_context():
            queue = jobs.queue("files")
        while not Worker.all(queue=queue):
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.1)
        baseline = peak_memory_mb(worker.pid)
        watcher.start()
        outcomes = {}
        for name, data in files.items():
            file_id = upload(api, conversation["id"], name, data)["id"]
            outcomes[name] = wait_until_failed(lambda: file_status(api, file_id), 60)
    finally:
        watching.set()
        if watcher.is_alive():
            watcher.join()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    for name, (status, seconds) in outcomes.items():
        assert (status["status"], status["error"]) == ("failed", HOSTILE[name][1])
        assert seconds < CPU_SECONDS + 5, (name, seconds)
    assert len(peaks) >= 3  # the worker and a work horse per file (and RQ's scheduler)
    assert max(peaks.values()) - baseline < GROWTH_BOUND_MB, (baseline, peaks)
