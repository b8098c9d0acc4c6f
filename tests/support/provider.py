"""The fake AI provider: a local OpenAI-compatible HTTP server for tests and benchmarks, standard library only.

It speaks enough of the chat completions API for the official ``openai`` SDK to talk to it
with ``base_url=server.url``, answers deterministically, and can be told to misbehave
(latency, error statuses, failures that recover, hangs, dropped connections, cut streams)
while it runs, through ``configure()`` or ``POST /_control``.

    with FakeProvider(latency_ms=300, name="fake") as server:
        client = openai.OpenAI(base_url=server.url, api_key="test")

A completion request goes through, in order: ``hang_s`` (sleep), ``drop`` (close without an
answer), ``api_key`` (401), validation (400), ``fail_next`` (``fail_status``), ``status``, then
``latency_ms`` and the answer (with usage counts unless ``usage`` is false). Error answers are immediate: latency applies to real answers only.
Stats are settled just before the last bytes of a response go out, so a client that has its
answer already sees it counted.

Command line: ``python -m tests.support.provider --port 8900 --latency-ms 800 --name bench``.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "luca-test-1"

DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "chunk_delay_ms": 0,
    "status": None,
    "fail_next": 0,
    "fail_status": 500,
    "hang_s": 0.0,
    "drop": False,
    "cut_after": None,
    "answer": None,
    "api_key": None,
    "usage": True,
}

# Setting name -> (accepted types, whether None is allowed).
_SETTING_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "latency_ms": ((int,), False),
    "chunk_delay_ms": ((int,), False),
    "status": ((int,), True),
    "fail_next": ((int,), False),
    "fail_status": ((int,), False),
    "hang_s": ((int, float), False),
    "drop": ((bool,), False),
    "cut_after": ((int,), True),
    "answer": ((str,), True),
    "api_key": ((str,), True),
    "usage": ((bool,), False),
}

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Check setting names and types; return them unchanged or raise ValueError."""
    for key, value in settings.items():
        if key not in _SETTING_TYPES:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(_SETTING_TYPES)}")
        types, nullable = _SETTING_TYPES[key]
        if value is None and nullable:
            continue
        # bool is an int subclass; only the `drop` flag may be a bool.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"setting {key!r} must be {'/'.join(t.__name__ for t in types)}, got {value!r}")
    return settings


def message_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def split_words(text: str) -> list[str]:
    """Word-sized pieces (each word with its trailing space) that join back to ``text``."""
    return re.findall(r"\s+|\S+\s*", text)


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-style error object for an HTTP status."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", str(status)))
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


@dataclass
class _Call:
    """One completion request: the settings it saw, the failure it gets, and its stats period."""

    settings: dict[str, Any]
    failure: tuple[int, str] | None
    generation: int
    wake: threading.Event
    status: int = 0
    settled: bool = False

    def pause(self, seconds: float) -> bool:
        """Sleep, waking early on stop() or reset(); True when woken."""
        return self.wake.wait(seconds)


class _Server(ThreadingHTTPServer):
    """The HTTP server, knowing the FakeProvider it belongs to."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, owner: FakeProvider, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)
        # A client may vanish between select() and accept(); a blocking accept would then
        # hang serve_forever (and stop()) for good. Non-blocking, accept just fails and is retried.
        self.socket.setblocking(False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away or connections stop() closed; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection: the API endpoints and the control endpoints."""

    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def owner(self) -> FakeProvider:
        """The FakeProvider this handler serves."""
        return self.server.owner

    def setup(self) -> None:
        """Register the connection so stop() can close it; send small writes at once (no Nagle delay)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._track(self.connection, True)

    def finish(self) -> None:
        """Unregister the connection."""
        self.owner._track(self.connection, False)
        try:
            super().finish()
        except ConnectionError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Log only when the server is verbose."""
        if self.owner.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        """GET /v1/models and /_stats."""
        self._guarded(self._get)

    def do_POST(self) -> None:
        """POST /v1/chat/completions, /_control and /_reset."""
        self._guarded(self._post)

    def _guarded(self, action: Any) -> None:
        try:
            action()
        except ConnectionError:
            self.close_connection = True

    def _get(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            created = int(time.time())
            data = [{"id": m, "object": "model", "created": created, "owned_by": self.owner.name}
                    for m in self.owner.models()]
            self._send_json(200, {"object": "list", "data": data})
        elif path == "/_stats":
            self._send_json(200, self.owner.stats())
        else:
            self._send_json(404, error_body(404, f"no such path: GET {self.path}"))

    def _post(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/v1/chat/completions":
            self._completion(raw)
        elif path == "/_control":
            try:
                settings = json.loads(raw or b"{}")
                if not isinstance(settings, dict):
                    raise ValueError("the body must be a JSON object")
                self._send_json(200, self.owner.configure(**settings))
            except ValueError as exc:
                self._send_json(400, error_body(400, str(exc)))
        elif path == "/_reset":
            self.owner.reset()
            self._send_json(200, self.owner.settings())
        else:
            self._send_json(404, error_body(404, f"no such path: POST {self.path}"))

    def _completion(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        auth = self.headers.get("Authorization", "")
        owner = self.owner
        self._call = call = owner._begin(body, auth)
        settings = call.settings
        try:
            if settings["hang_s"] and call.pause(settings["hang_s"]):
                return self._abort()
            if settings["drop"]:
                return self._abort()
            if call.failure is not None:
                call.status, message = call.failure
                self._settle()
                headers = {"Retry-After": "1"} if call.status == 429 else {}
                return self._send_json(call.status, error_body(call.status, message), headers)
            if settings["latency_ms"] and call.pause(settings["latency_ms"] / 1000):
                return self._abort()
            assert isinstance(body, dict)  # _begin turned anything else into a 400
            call.status = 200
            if body.get("stream"):
                self._stream(body, settings)
            else:
                payload = owner._completion(body, settings)
                self._settle(completed=True)
                self._send_json(200, payload)
        finally:
            self._settle()

    def _settle(self, completed: bool = False) -> None:
        """Record the call in the stats once, before the client can see the end of the response."""
        if not self._call.settled:
            self._call.settled = True
            self.owner._end(self._call, completed)

    def _stream(self, body: dict[str, Any], settings: dict[str, Any]) -> None:
        owner = self.owner
        text = owner._answer(body, settings)
        base = {"id": owner._next_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model") or DEFAULT_MODEL}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # Chunked encoding: the client reads incrementally, and a cut shows as an incomplete body.
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._write_event(chunk({"role": "assistant", "content": ""}))
        delay = settings["chunk_delay_ms"] / 1000
        for sent, piece in enumerate(split_words(text)):
            if settings["cut_after"] is not None and sent >= settings["cut_after"]:
                return self._abort()
            if delay and self._call.pause(delay):
                return self._abort()
            self._write_event(chunk({"content": piece}))
        self._settle(completed=True)
        self._write_event(chunk({}, "stop"))
        if settings["usage"] and (body.get("stream_options") or {}).get("include_usage"):
            self._write_event({**base, "choices": [], "usage": owner._usage(body, text)})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _write_event(self, data: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the connection without (finishing) a response."""
        self._settle()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeProvider:
    """A local OpenAI-compatible chat completions server whose behaviour tests can change."""

    def __init__(self, port: int = 0, latency_ms: int = 0, name: str = "fake", *,
                 verbose: bool = False, **settings: Any) -> None:
        """Prepare a server; ``latency_ms`` and ``settings`` become the defaults reset() returns to."""
        self.port = port
        self.name = name
        self.verbose = verbose
        self._defaults = {**DEFAULTS, **validate_settings({"latency_ms": latency_ms, **settings})}
        self._lock = threading.Lock()
        # reset() and stop() set this to wake sleeping requests; reset() then replaces it.
        self._wake = threading.Event()
        self._generation = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0
        self._settings: dict[str, Any] = {}
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Serve on 127.0.0.1 in a daemon thread; return self."""
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        with self._lock:
            self._wake = threading.Event()
        self._httpd = _Server(self, ("127.0.0.1", self.port))
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-provider-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving promptly, waking hanging requests and closing open connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        with self._lock:
            self._wake.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeProvider:
        """Start serving."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop serving."""
        self.stop()

    @property
    def url(self) -> str:
        """The base URL for the openai SDK, e.g. ``http://127.0.0.1:54321/v1``."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        return f"http://127.0.0.1:{self.port}/v1"

    # -- settings and stats -----------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change behaviour while running; return the current settings."""
        validate_settings(settings)
        with self._lock:
            self._settings.update(settings)
            return dict(self._settings)

    def settings(self) -> dict[str, Any]:
        """The current settings."""
        with self._lock:
            return dict(self._settings)

    def reset(self) -> None:
        """Return to the default settings, zero the stats and the request log, and cut short sleeping requests.

        Requests still running from before the reset no longer count in the stats.
        """
        with self._lock:
            self._settings = dict(self._defaults)
            self._requests: list[Any] = []
            self._stats: dict[str, Any] = {"requests": 0, "active": 0, "max_active": 0,
                                           "by_status": {}, "streams": 0, "completed": 0}
            self._generation += 1
            self._wake.set()
            self._wake = threading.Event()

    def stats(self) -> dict[str, Any]:
        """Counts since the last reset: requests, active, max_active, by_status, streams, completed."""
        with self._lock:
            return {**self._stats, "by_status": dict(self._stats["by_status"])}

    @property
    def requests(self) -> list[Any]:
        """A copy of the JSON bodies received on /v1/chat/completions."""
        with self._lock:
            return list(self._requests)

    def models(self) -> list[str]:
        """The default model name and every model asked for since the last reset."""
        with self._lock:
            seen = {r.get("model") for r in self._requests if isinstance(r.get("model"), str)}
        return [DEFAULT_MODEL, *sorted(seen - {DEFAULT_MODEL})]

    # -- used by the handler ----------------------------------------------------------------

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _begin(self, body: Any, auth: str) -> _Call:
        """Count a completion request and decide, atomically, what it gets."""
        with self._lock:
            stats = self._stats
            stats["requests"] += 1
            stats["active"] += 1
            stats["max_active"] = max(stats["max_active"], stats["active"])
            settings = dict(self._settings)
            if isinstance(body, dict):
                self._requests.append(body)
                stats["streams"] += bool(body.get("stream"))
            failure: tuple[int, str] | None = None
            if settings["drop"]:
                pass  # a dropped request gets no answer at all, so it uses up no fail_next
            elif settings["api_key"] is not None and auth != f"Bearer {settings['api_key']}":
                failure = (401, "Incorrect API key provided.")
            elif not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                failure = (400, "The body must be a JSON object with a 'messages' list.")
            elif self._settings["fail_next"] > 0:
                self._settings["fail_next"] -= 1
                failure = (settings["fail_status"], f"Simulated failure ({settings['fail_status']}).")
            elif settings["status"] is not None:
                failure = (settings["status"], f"Simulated error ({settings['status']}).")
            return _Call(settings, failure, self._generation, self._wake)

    def _end(self, call: _Call, completed: bool) -> None:
        """Count a completion request as finished, with the status it got (0: none)."""
        with self._lock:
            if call.generation != self._generation:
                return  # it began before the last reset
            stats = self._stats
            stats["active"] -= 1
            stats["completed"] += completed
            if call.status:
                stats["by_status"][str(call.status)] = stats["by_status"].get(str(call.status), 0) + 1

    def _next_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"chatcmpl-{self._ids}"

    def _answer(self, body: dict[str, Any], settings: dict[str, Any]) -> str:
        if settings["answer"] is not None:
            return settings["answer"]
        last_user = next((message_text(m.get("content")) for m in reversed(body["messages"])
                          if isinstance(m, dict) and m.get("role") == "user"), "")
        return f"[{self.name}] You asked: {last_user[:200]}"

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(message_text(m.get("content"))) for m in body["messages"] if isinstance(m, dict)) // 4 + 1
        completion = len(text) // 4 + 1
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        text = self._answer(body, settings)
        return {
            "id": self._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or DEFAULT_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            **({"usage": self._usage(body, text)} if settings["usage"] else {}),
        }


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (the command line entry point)."""
    parser = argparse.ArgumentParser(description="The fake AI provider: a local OpenAI-compatible server.")
    parser.add_argument("--port", type=int, default=8900, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before each answer / first chunk")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="delay between streamed chunks")
    parser.add_argument("--name", default="fake", help="name shown in answers, e.g. [bench] ...")
    parser.add_argument("--answer", default=None, help="fixed answer text instead of the echo")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = FakeProvider(port=args.port, latency_ms=args.latency_ms, name=args.name, verbose=args.verbose,
                        chunk_delay_ms=args.chunk_delay_ms, answer=args.answer, api_key=args.api_key)
    server.start()
    # SIGTERM (e.g. from a benchmark script) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{args.name}: serving an OpenAI-compatible API at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
