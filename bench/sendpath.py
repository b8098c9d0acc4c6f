"""Where a send's time goes outside the provider: an in-process timer per phase (the `sendpath` part).

Run by part_sendpath in a process of its own (``python -m bench.sendpath CONFIG.json``), so that
prometheus_client starts in multiprocess mode as in gunicorn and no benchmark thread competes:
Luca's production config (PostgreSQL, Redis, metrics) on the bench stack, a provider answering
at once, sends through Flask's test client in this thread. A handful of functions are wrapped
with a timer; time inside several wrapped calls counts once, for the outermost (a commit's
INSERTs are the commit's, a script's EVALSHA is Redis's). What no timer covers is Flask,
routing, auth and Luca's own code.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

PHASES = {  # phase -> (module, attribute path) of the functions it times
    "provider call (SDK and HTTP to the provider)": [("luca.ai.providers", "OpenAICompatibleProvider.complete")],
    "COMMIT of the question (the server syncs its WAL)": [("sqlalchemy.orm", "Session.commit")],
    # the answer's INSERT commits itself (autocommit), so its WAL sync is counted here
    "SQL statements (history SELECT, question INSERT with UPDATE, answer INSERT)": [
        ("sqlalchemy.engine.base", "Connection._execute_context")],
    "Redis (commands, scripts, pipelines)": [("redis.client", "Redis.execute_command"),
                                             ("redis.client", "Pipeline.execute")],
    "JSON and pydantic (request, response, cache values)": [
        ("json", "dumps"), ("json", "loads"), ("pydantic", "BaseModel.model_validate"),
        ("pydantic", "BaseModel.model_validate_json"), ("pydantic", "BaseModel.model_dump"),
        ("pydantic", "BaseModel.model_dump_json")],
    "metrics (prometheus_client, multiprocess files)": [
        ("prometheus_client.metrics", "MetricWrapperBase.labels"), ("prometheus_client.metrics", "Counter.inc"),
        ("prometheus_client.metrics", "Histogram.observe"), ("prometheus_client.metrics", "Gauge.set"),
        ("prometheus_client.metrics", "Gauge.inc"), ("prometheus_client.metrics", "Gauge.dec")],
}


UNTIMED = "Flask, routing, auth and Luca's own code (no timer)"


class PhaseTimer:
    """Wall time of the outermost wrapped call on this thread, per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.local = threading.local()
        self.thread = threading.get_ident()

    def wrap(self, phase: str, function: Any) -> Any:
        """function, timed for phase when it is the outermost timed call."""
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self.local, "inside", False) or threading.get_ident() != self.thread:
                return function(*args, **kwargs)
            self.local.inside = True
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1
                self.local.inside = False
        return timed

    def install(self) -> None:
        """Wrap every function of PHASES (before the app is built, so hooks registered then are the wrapped ones)."""
        import importlib

        for phase, targets in PHASES.items():
            for module_name, path in targets:
                owner: Any = importlib.import_module(module_name)
                *outer, name = path.split(".")
                for part in outer:
                    owner = getattr(owner, part)
                original = owner.__dict__[name]
                if isinstance(original, classmethod):
                    setattr(owner, name, classmethod(self.wrap(phase, original.__func__)))
                else:
                    setattr(owner, name, self.wrap(phase, original))

    def reset(self) -> None:
        """Forget what was timed so far (the warm-up)."""
        self.seconds.clear()
        self.calls.clear()


def time_statements(app: Any, timer: PhaseTimer) -> dict[str, float]:
    """ms each kind of statement spends in the database driver (cursor.execute), summed, on the timer's thread."""
    import sqlalchemy as sa

    from luca.extensions import db

    spent: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == timer.thread:
            started[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if id(cursor) in started:
            words = statement.split()
            kind = " ".join(words[:3] if words[0] in {"INSERT", "UPDATE"} else words[:1])
            spent[kind] += (time.perf_counter() - started.pop(id(cursor))) * 1000

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", before)
        sa.event.listen(db.engine, "after_cursor_execute", after)
    return spent


def phase_ms(timer: PhaseTimer, per_send_ms: float, sends: int) -> dict[str, float]:
    """ms per send of each phase, and the rest that no timer covers."""
    phases = {phase: round(timer.seconds.get(phase, 0.0) * 1000 / sends, 3) for phase in PHASES}
    phases[UNTIMED] = round(per_send_ms - sum(phases.values()), 3)
    return phases


def direct_floor(provider_url: str, runs: int) -> float:
    """Median ms of a chat completion sent straight to the provider on one kept-alive connection."""
    base = provider_url.removesuffix("/v1").removeprefix("http://")
    host, port = base.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    times = []
    for _ in range(runs):
        body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": f"q {uuid.uuid4()}"}]})
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
        times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return sorted(times)[len(times) // 2]


def profile(settings: dict[str, Any]) -> dict[str, Any]:
    """Send settings["sends"] follow-up questions and return the phases' ms per send."""
    timer = PhaseTimer()
    timer.install()
    from luca import create_app
    from luca.extensions import shutdown

    app = create_app()
    cursor_ms = time_statements(app, timer)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {settings['token']}"}
    conversation = client.post("/api/conversations", json={"title": "profiled"}, headers=headers).get_json()
    path = f"/api/conversations/{conversation['id']}/messages"

    def send() -> None:
        response = client.post(path, json={"content": f"q {uuid.uuid4()}", "cache": False}, headers=headers)
        assert response.status_code == 201, response.get_data(as_text=True)

    timer.reset()
    started = time.perf_counter()
    send()  # the first answer of this app: what is left lazy shows here
    first_ms = (time.perf_counter() - started) * 1000
    first = phase_ms(timer, first_ms, 1)
    for _ in range(20):  # warm pools, caches and the SDK
        send()
    sends = settings["sends"]
    # Untimed wall first (wrappers cost a little), then the timed run in a fresh conversation of the same length.
    started = time.perf_counter()
    for _ in range(sends):
        send()
    wall_ms = (time.perf_counter() - started) * 1000 / sends
    timer.reset()
    cursor_ms.clear()
    started = time.perf_counter()
    for _ in range(sends):
        send()
    timed_ms = (time.perf_counter() - started) * 1000 / sends
    phases = phase_ms(timer, timed_ms, sends)
    calls = {phase: round(timer.calls.get(phase, 0) / sends, 1) for phase in PHASES}
    shutdown(app)
    return {"sends": sends, "send_ms": round(wall_ms, 3), "send_ms_with_timers": round(timed_ms, 3),
            "direct_provider_ms": round(direct_floor(settings["provider_url"], 200), 3),
            "phases_ms": phases, "first_send_ms": round(first_ms, 3), "first_send_phases_ms": first, "timed_calls_per_send": calls,
            "sql_cursor_ms_per_send": {kind: round(ms / sends, 3) for kind, ms in sorted(cursor_ms.items())}}


def main() -> None:
    """Read the settings file named on the command line, profile, print the figures as JSON."""
    settings = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
    print(json.dumps(profile(settings)))


if __name__ == "__main__":
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="luca-metrics-"))
    main()


def part_sendpath(ctx: Any) -> dict[str, Any]:
    """The send path's phases, per send, in a process of its own (see the module's docstring)."""
    import subprocess

    from bench.parts import luca_env, provider
    from bench.stack import ROOT

    prov = provider(ctx, 0)
    settings = ctx.stack.tmp / "sendpath.json"
    settings.write_text(json.dumps({"token": ctx.data.mix.tokens[1], "provider_url": prov.url,
                                    "sends": 100 if ctx.quick else 400}))
    ctx.stack.flush_redis()
    result = subprocess.run([sys.executable, "-m", "bench.sendpath", str(settings)], cwd=ROOT,
                            env=luca_env(ctx, prov.url), capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"bench.sendpath failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
