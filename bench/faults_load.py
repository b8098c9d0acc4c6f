"""Load for the fault drills: HTTP clients on a bounded thread pool; every request timed, every id kept.

A ``Client`` talks to loopback only, with a timeout: one connection per request, or, with
keep_alive, one kept-alive connection per thread that is reopened only when the server announced
it closes it (so a request dropped on a kept-alive connection counts as a failure, as it would for
a client that does not retry).
A ``Recorder`` keeps each request's outcome and the ids the API acknowledged (conversations,
messages, files), so a drill can check afterwards that each of them is in the database.
``Load`` runs a session function on N threads until it is stopped or its time is up.
"""
from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 30.0


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


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status (0 when none came), decoded JSON body, error name."""

    status: int
    body: Any = None
    error: str | None = None


class Client:
    """A signed HTTP client for one Luca user; safe to share between threads."""

    def __init__(self, base: str, token: str, timeout: float = REQUEST_TIMEOUT, keep_alive: bool = False) -> None:
        parts = urlsplit(base)
        assert parts.hostname in {"127.0.0.1", "localhost"}, "drills talk to loopback only"
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
             content_type: str = "application/json") -> Reply:
        """Send one request and read the whole answer."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {self.token}"}
        if not self.keep_alive:
            headers["Connection"] = "close"
        if data is not None:
            headers["Content-Type"] = content_type
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)
            return Reply(0, error=type(exc).__name__)
        if not self.keep_alive or response.will_close:
            self._drop(conn)
        try:
            decoded = json.loads(payload) if payload else None
        except ValueError:
            decoded = None
        return Reply(response.status, decoded)


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
    boundary = uuid.uuid4().hex
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
           f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    body = rec.request(client, "upload", "POST", f"/api/conversations/{conversation_id}/files", raw=raw,
                       content_type=f"multipart/form-data; boundary={boundary}")
    if body is None:
        return None
    rec.acknowledge("files", body["id"])
    return body["id"]

