"""Load for the fault drills: HTTP clients on a bounded thread pool; every request timed, every id kept.

The clients are bench/client.py's ``Client`` (loopback only, with a timeout, kept-alive or not).
A ``Recorder`` keeps each request's outcome and the ids the API acknowledged (conversations,
messages, files), so a drill can check afterwards that each of them is in the database.
``Load`` runs a session function on N threads until it is stopped or its time is up.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from bench.client import REQUEST_TIMEOUT, Client
from tests.support.api import multipart


@dataclass(frozen=True)
class Outcome:
    """One request: what it was, the status it got (0: no HTTP answer), when it ran (drill clock, seconds)."""

    op: str
    status: int
    start: float
    end: float
    error: str | None = None
    provider: str | None = None

    @property
    def seconds(self) -> float:
        """How long it took."""
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


class Recorder:
    """Every request's outcome and every acknowledged id, shared by the load threads."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.ids: dict[str, list[Any]] = {}
        self.marks: dict[str, float] = {}

    def now(self) -> float:
        """Seconds since the drill began."""
        return time.monotonic() - self.t0

    def mark(self, name: str) -> float:
        """Note a moment of the drill (fault, restored ...) and return it."""
        self.marks[name] = at = self.now()
        return at

    def request(self, client: Client, op: str, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """Send a request, record its outcome; return the JSON body of a 2xx answer, else None."""
        start = self.now()
        reply = client.call(method, path, body, **kwargs)
        provider = reply.body.get("answer", {}).get("provider") if isinstance(reply.body, dict) else None
        outcome = Outcome(op, reply.status, start, self.now(), reply.error, provider)
        with self._lock:
            self.outcomes.append(outcome)
        return reply.body if outcome.ok else None

    def acknowledge(self, kind: str, *values: Any) -> None:
        """Remember ids the API answered 2xx for, to look for them in the database later."""
        with self._lock:
            self.ids.setdefault(kind, []).extend(values)

    def acknowledged(self, kind: str) -> list[Any]:
        """The ids of one kind acknowledged so far."""
        with self._lock:
            return list(self.ids.get(kind, []))

    def between(self, start: float, end: float) -> list[Outcome]:
        """Requests that were in flight at some moment of [start, end]."""
        with self._lock:
            return [o for o in self.outcomes if o.start <= end and o.end >= start]

    def statuses(self, outcomes: Iterable[Outcome] | None = None) -> Counter[str]:
        """Counts by status ("201", "503", "0:ConnectionRefusedError" ...)."""
        with self._lock:
            chosen = list(self.outcomes if outcomes is None else outcomes)
        return Counter(str(o.status) if o.status else f"0:{o.error}" for o in chosen)


Session = Callable[[Client, Recorder], None]


@dataclass
class Load:
    """Run a session on `threads` threads, each with its own client, until stopped or `limit` seconds pass."""

    session: Session
    clients: list[Client]
    recorder: Recorder
    threads: int = 6
    pause: float = 0.05
    limit: float = 300.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __enter__(self) -> Self:
        """Start the threads."""
        deadline = time.monotonic() + self.limit
        for n in range(self.threads):
            client = self.clients[n % len(self.clients)]
            thread = threading.Thread(target=self._run, args=(client, deadline), name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the threads and wait for their last requests."""
        self.stop()

    def stop(self) -> None:
        """Ask every thread to stop after its current session; wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT * 4)

    def _run(self, client: Client, deadline: float) -> None:
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    self.session(client, self.recorder)
                except Exception as exc:  # noqa: BLE001 - a bug in a session must show, not kill the thread silently
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(self.pause)
        finally:
            client.close()


# -- sessions: what one simulated user does --------------------------------------------------------
def question() -> str:
    """A question no one asked before (so no answer comes from the deduplication cache)."""
    return f"How do I book invoice {uuid.uuid4().hex[:12]} with deferred VAT?"


def new_conversation(client: Client, rec: Recorder, title: str | None = None) -> str | None:
    """POST /api/conversations; the id when acknowledged."""
    body = rec.request(client, "create", "POST", "/api/conversations", {"title": title} if title else {})
    if body is None:
        return None
    rec.acknowledge("conversations", body["id"])
    return body["id"]


def ask(client: Client, rec: Recorder, conversation_id: str) -> bool:
    """POST a new question; remember the question's and the answer's ids when acknowledged."""
    body = rec.request(client, "ask", "POST", f"/api/conversations/{conversation_id}/messages",
                       {"content": question()})
    if body is None:
        return False
    rec.acknowledge("messages", body["message"]["id"], body["answer"]["id"])
    return True


def list_conversations(client: Client, rec: Recorder) -> None:
    """GET the first page of the conversation list."""
    rec.request(client, "list", "GET", "/api/conversations?limit=20")


def csv_document() -> bytes:
    """A small CSV, different every time."""
    return f"account,debit,credit\ncash,{uuid.uuid4().int % 10_000},0\nsales,0,100\n".encode()


def upload(client: Client, rec: Recorder, conversation_id: str, name: str, data: bytes) -> int | None:
    """Upload a document (multipart); the file id when acknowledged (202)."""
    raw, content_type = multipart({"file": (name, data)})
    body = rec.request(client, "upload", "POST", f"/api/conversations/{conversation_id}/files", raw=raw,
                       content_type=content_type)
    if body is None:
        return None
    rec.acknowledge("files", body["id"])
    return body["id"]

