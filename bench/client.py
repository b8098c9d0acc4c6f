"""A small keep-alive HTTP client and latency statistics for the benchmark parts that do not use locust."""
from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit


class Client:
    """One keep-alive connection to Luca with a user's token (not thread-safe: one per thread)."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 120) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        """(status, decoded JSON or None, seconds)."""
        headers = {"Connection": "keep-alive"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            raise
        elapsed = time.perf_counter() - started
        parsed = json.loads(raw) if raw and response.getheader("Content-Type", "").startswith("application/json") \
            else None
        return response.status, parsed, elapsed

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


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
