"""Document extraction in a confined child process, so that no upload can grow a web or worker process.

A module of its own because it is process plumbing, not parsing: luca/documents.py reads files; this
runs it where a hostile file can only hurt a throwaway process. Each document gets a fresh interpreter,
`python -I -B luca/documents.py` (isolated: no environment, no user site, no current directory; the
file imports nothing of Luca), fed the limits and the bytes on standard input. The child limits its own
address space (RLIMIT_AS, DOCUMENT_MEMORY_MB) and CPU time (RLIMIT_CPU, DOCUMENT_CPU_SECONDS) before it
reads the document, then answers in JSON lines: progress fractions while it reads, then the result.
JSON, not pickle: unpickling what a compromised child wrote would run its code here. The parent gives
the child no environment (no secrets), bounds what it accepts back, and kills the child WALL_GRACE_SECONDS
after its CPU limit if it has not finished (a child that waits, or is starved of CPU, is caught too).

Why a new interpreter rather than a fork: forking a multi-threaded web process can copy locks other
threads hold. Measured per document on the 2-core development machine (under load), with the app
imported in the parent as gunicorn and the worker have it: `python -I` importing lxml and pypdf takes
150 ms; multiprocessing's forkserver with luca.documents preloaded takes 19 ms a document, but 1.2 s to
start its server in every new process, and RQ runs every job in a new fork (the work horse), so in RQ
mode each document would pay that; its children would also inherit the whole app's ~100 MB of address
space. `python -m` or multiprocessing's spawn import the app (luca/__init__.py) first: 1.5-1.7 s.

How a child ends is reported as what it was: SIGXCPU (or the parent's kill at the deadline) as a
timeout, MemoryError or SIGKILL (the kernel's OOM killer) as memory, a DocumentError as itself.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from luca import documents
from luca.documents import Block, DocumentError, Extracted, Limits, Progress, out_of_memory, out_of_time

log = logging.getLogger(__name__)

WALL_GRACE_SECONDS = 10  # wall-clock time allowed beyond the CPU limit (start-up, a busy machine)
PIPE_CHUNK = 64 * 1024
MAX_ERRORS_KEPT = 4096  # the end of the child's standard error, for the log
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # more than a child of ours ever writes (text and blocks of max_chars)


def extract_isolated(data: bytes, limits: Limits = Limits(), progress: Progress | None = None) -> Extracted:
    """Extract a document in a confined child process; DocumentError for any unusable file, limits included.

    progress(fraction) is called here, in the caller's thread, as the child reports; an exception it
    raises stops the child and propagates unchanged.
    """
    request = json.dumps(asdict(limits)).encode() + b"\n" + data
    command = [sys.executable, "-I", "-B", documents.__file__]
    env = {name: os.environ[name] for name in ("LD_LIBRARY_PATH",) if name in os.environ}
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd="/")
    deadline = time.monotonic() + limits.cpu_seconds + WALL_GRACE_SECONDS
    try:
        answer, errors, in_time = _exchange(child, request, deadline, progress)
        if in_time:  # its output is closed: it is exiting (killed now, it would look like the OOM killer's work)
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        in_time = False
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    if errors.strip():
        log.info("[Sandbox] document reader said: %s", errors.decode(errors="replace").strip()[-1000:])
    return _outcome(child.returncode, answer, in_time, limits)


def _exchange(child: subprocess.Popen, request: bytes, deadline: float,
              progress: Progress | None) -> tuple[dict[str, Any] | None, bytes, bool]:
    """Write the request, read answers until the child closes its output: (last answer, stderr, in time)."""
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    answer: dict[str, Any] | None = None
    pending, received, errors = memoryview(request), bytearray(), b""
    os.set_blocking(child.stdin.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdin, selectors.EVENT_WRITE)
        selector.register(child.stdout, selectors.EVENT_READ)
        selector.register(child.stderr, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return answer, errors, False
            for key, _ in selector.select(remaining):
                if key.fileobj is child.stdin:
                    try:
                        pending = pending[os.write(child.stdin.fileno(), pending[:PIPE_CHUNK]):]
                    except BrokenPipeError:  # the child is gone; its exit status tells why
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(child.stdin)
                        child.stdin.close()
                    continue
                chunk = os.read(key.fd, PIPE_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is child.stderr:
                    errors = (errors + chunk)[-MAX_ERRORS_KEPT:]
                else:
                    received += chunk
                    if len(received) > MAX_ANSWER_BYTES:
                        raise DocumentError("crashed")
                    if b"\n" in chunk:
                        *lines, rest = received.split(b"\n")
                        received = rest
                        for line in lines:
                            message = _message(line)
                            if "progress" not in message:
                                answer = message
                            elif progress is not None:
                                progress(float(message["progress"]))
    return answer, errors, True


def _message(line: bytes) -> dict[str, Any]:
    """One answer of the child: a JSON object with a numeric "progress", or anything else (the last one counts)."""
    try:
        message = json.loads(line)
        if "progress" in message:
            float(message["progress"])
    except (ValueError, TypeError) as exc:  # not a child of ours wrote this
        raise DocumentError("crashed") from exc
    return message


def _outcome(status: int, answer: Any, in_time: bool, limits: Limits) -> Extracted:
    """The result the child sent, or the DocumentError that tells how it ended."""
    if not in_time or status == -signal.SIGXCPU:
        raise out_of_time(limits)
    if status in (documents.EXIT_OUT_OF_MEMORY, -signal.SIGKILL):
        raise out_of_memory(limits)
    try:
        if status == 0 and "error" in answer:
            raise DocumentError(str(answer["error"]["code"]), str(answer["error"]["reason"]))
        if status == 0 and "result" in answer:
            result = answer["result"]
            return Extracted(kind=str(result["kind"]), text=str(result["text"]), pages=result["pages"],
                             truncated=bool(result["truncated"]),
                             blocks=[Block(str(text), anchor) for text, anchor in result["blocks"]
                                     if isinstance(anchor, dict)])
    except (KeyError, TypeError, ValueError):
        pass
    log.warning("[Sandbox] the document reader ended with status %s and no answer", status)
    raise DocumentError("crashed")
