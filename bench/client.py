"""The HTTP client of the benchmark parts that do not use locust and of the fault drills, and latency statistics."""
from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status (0 when none came), decoded JSON body, error name, seconds it took."""

    status: int
    body: Any = None
    error: str | None = None
    seconds: float = 0.0


class Client:
    """A signed HTTP client for one Luca user on loopback; safe to share between threads.

    Without keep_alive every request has a connection of its own. With it, each thread keeps one
    connection, reopened only when the server announced it closes it (so a request dropped on a
    kept-alive connection counts as a failure, as it would for a client that does not retry).
    """

    def __init__(self, base: str, token: str | None = None, timeout: float = REQUEST_TIMEOUT,
                 keep_alive: bool = True) -> None:
        parts = urlsplit(base)
        assert parts.hostname in {"127.0.0.1", "localhost"}, "the benchmarks and drills talk to loopback only"
        self.host, self.port = parts.hostname, parts.port or 80
        self.token = token
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._local = threading.local()  # this thread's kept-alive connection

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            if self.keep_alive:
                self._local.conn = conn
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        """Close a connection; the next request of this thread opens a new one."""
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's kept-alive connection, if any."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> Reply:
        """Send one request (with extra headers) and read the whole answer."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {**(headers or {}), "Connection": "keep-alive" if self.keep_alive else "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = content_type
        conn = self._connection()
        started = time.perf_counter()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)
            return Reply(0, error=type(exc).__name__, seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        if not self.keep_alive or response.will_close:
            self._drop(conn)
        try:
            decoded = json.loads(payload) if payload else None
        except ValueError:
            decoded = None
        return Reply(response.status, decoded, seconds=seconds)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; nan for no values."""
    return sum(values) / len(values) if values else math.nan


def run_concurrently(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Call work(i) for i in range(workers), all at once on their own threads; return the results."""
    start = threading.Barrier(workers)

    def go(i: int) -> Any:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(go, range(workers)))
