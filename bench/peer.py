"""Luca beside its peer and its floor: the `peer` and `concurrency` parts.

`peer`: the same fake provider (100 ms) answered four ways — directly (the floor), through Luca's
REST send and through Luca's OpenAI-compatible /v1/chat/completions (gunicorn with its production
config, PostgreSQL, Redis, an RQ worker), and through LiteLLM's proxy on the very request /v1 gets
(tests/support/litellm/requirements.txt, in .venv-litellm: its pins clash with Luca's; as many
workers as Luca, no database, a master key). Rounds are interleaved (the order rotated each round),
so the machine's noise hits all of them alike.

`concurrency`: Luca alone at 10 and 50 clients under several worker × thread settings, interleaved
the same way, to choose gunicorn.conf.py's defaults.

A module of its own because LiteLLM is a process with a venv and a config of its own.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import Client, percentile, run_concurrently
from bench.parts import Context, Luca, provider
from bench.stack import ROOT
from tests.support.processes import Process, free_port, http_status, wait_until

LATENCY_MS = 100
LITELLM = Path(os.environ.get("LITELLM_VENV", ROOT / ".venv-litellm")) / "bin" / "litellm"
MASTER_KEY = "sk-bench-master"
TARGETS = {  # level -> (p50 ceiling, p99 ceiling) in ms of Luca's overhead
    1: (5.0, None),
    10: (10.0, 25.0),
}
PEER_RATIO = 0.5  # Luca's p50 overhead at most this share of LiteLLM's, at every level
FIRST_OVER_WARM = 2.0  # the first answer after a start within this many times a warm answer's overhead

# A client sends one request: returns (ok, seconds) on its own kept-alive connection.
Sender = Callable[[], tuple[bool, float]]


class LiteLLM(Process):
    """LiteLLM's proxy in front of one OpenAI-compatible provider."""

    def __init__(self, tmp: Path, provider_url: str, workers: int) -> None:
        self.port = free_port()
        config = tmp / "litellm.yaml"
        config.write_text("model_list:\n"
                          "  - model_name: bench-model\n"
                          "    litellm_params:\n"
                          "      model: openai/bench-model\n"
                          f"      api_base: {provider_url}\n"
                          "      api_key: bench\n"
                          "general_settings:\n"
                          f"  master_key: {MASTER_KEY}\n"
                          "litellm_settings:\n"
                          "  telemetry: false\n")
        env = {"PATH": f"{LITELLM.parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "PYTHONUNBUFFERED": "1"}
        super().__init__("litellm", [str(LITELLM), "--config", str(config), "--host", "127.0.0.1",
                                     "--port", str(self.port), "--num_workers", str(workers),
                                     # uvicorn restarts a worker that misses its health check; importing
                                     # litellm on a busy machine takes longer than the default allows
                                     "--timeout_worker_healthcheck", "300"],
                         env, tmp / "litellm.log")

    @property
    def base(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def answering(self, timeout: float = 600) -> LiteLLM:
        """Wait for its liveness probe (it takes a while to import, minutes on a busy machine)."""
        wait_until(lambda: http_status(f"{self.base}/health/liveliness") == 200 or not self.running(), timeout,
                   "LiteLLM's proxy answering")
        if not self.running():
            raise RuntimeError(f"LiteLLM's proxy exited at start:\n{self.output()[-3000:]}")
        return self


def chat_completions(base: str, keys: list[str | None], model: str = "bench-model",
                     headers: dict[str, str] | None = None) -> Callable[[int], Sender]:
    """Clients that POST /v1/chat/completions to base, each with one unique user question a request;
    client i uses keys[i % len(keys)] as its bearer key."""
    def make(i: int) -> Sender:
        client = Client(base, keys[i % len(keys)])

        def send() -> tuple[bool, float]:
            body = {"model": model, "messages": [{"role": "user", "content": f"q {uuid.uuid4()}"}]}
            reply = client.call("POST", "/v1/chat/completions", body, headers=headers)
            return reply.status == 200, reply.seconds
        return send
    return make


def direct(url: str) -> Callable[[int], Sender]:
    """Clients that call the provider itself."""
    return chat_completions(url.removesuffix("/v1"), [None])


def litellm(base: str) -> Callable[[int], Sender]:
    """Clients of LiteLLM's proxy, with the master key."""
    return chat_completions(base, [MASTER_KEY])


def luca_v1(base: str, tokens: list[str]) -> Callable[[int], Sender]:
    """Clients of Luca's /v1/chat/completions (model "luca", the whole chain), skipping deduplication as LiteLLM
    has none: Cache-Control: no-cache, the OpenAI door's "cache": false."""
    return chat_completions(base, list(tokens), model="luca", headers={"Cache-Control": "no-cache"})


def luca(base: str, tokens: list[str]) -> Callable[[int], Sender]:
    """Clients of Luca, each a user of its own with a conversation of its own, sending `"cache": false`."""
    def make(i: int) -> Sender:
        client = Client(base, tokens[i % len(tokens)])
        created = client.call("POST", "/api/conversations", {"title": "peer"})
        if created.status != 201:
            raise RuntimeError(f"creating a conversation answered {created.status}: {created.body}")
        conversation = created.body
        path = f"/api/conversations/{conversation['id']}/messages"
        return lambda: (lambda r: (r.status == 201, r.seconds))(
            client.call("POST", path, {"content": f"q {uuid.uuid4()}", "cache": False}))
    return make


def one_round(make: Callable[[int], Sender], clients: int, per_client: int) -> tuple[list[float], int]:
    """clients threads, each on one connection: a first request not counted, then per_client timed ones."""
    def work(i: int) -> tuple[list[float], int]:
        send = make(i)
        send()  # opens the connection
        times, errors = [], 0
        for _ in range(per_client):
            ok, seconds = send()
            if ok:
                times.append(seconds * 1000 - LATENCY_MS)
            else:
                errors += 1
        return times, errors

    results = run_concurrently(clients, work)
    return [t for times, _ in results for t in times], sum(e for _, e in results)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and every process below it, now."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pending += [int(child) for child in children]
    return total


def interleaved(senders: dict[str, Callable[[int], Sender]], clients: int, rounds: int, per_client: int,
                servers: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Rounds of every target in turn, the order rotated each round; p50 and p99 overhead of each.

    servers names the process of a target whose CPU time per answer is measured too.
    """
    names = list(senders)
    servers = servers or {}
    samples: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    cpu = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            before = cpu_seconds(servers[name]) if name in servers else 0.0
            times, failed = one_round(senders[name], clients, per_client)
            cpu[name] += (cpu_seconds(servers[name]) - before) if name in servers else 0.0
            samples[name] += times
            errors[name] += failed
    figures = {name: {"samples": len(samples[name]), "errors": errors[name],
                      "p50_ms": round(percentile(samples[name], 50), 2),
                      "p99_ms": round(percentile(samples[name], 99), 2)} for name in names}
    for name in servers:
        # the uncounted first request of each client is served too
        figures[name]["server_cpu_ms_per_answer"] = round(cpu[name] * 1000 / (rounds * clients * (per_client + 1)), 2)
    return figures


def plan(ctx: Context) -> list[tuple[int, int, int]]:
    """(clients, rounds, requests per client per round) of each level."""
    if ctx.quick:
        return [(1, 3, 20), (10, 3, 6), (50, 3, 3)]
    return [(1, 5, 40), (10, 5, 12), (50, 5, 5)]


def first_answer(base: str, token: str) -> float:
    """The overhead of the first answer a freshly started Luca gives."""
    client = Client(base, token)
    conversation = client.call("POST", "/api/conversations", {"title": "first"}).body
    reply = client.call("POST", f"/api/conversations/{conversation['id']}/messages",
                        {"content": f"q {uuid.uuid4()}", "cache": False})
    client.close()
    return round(reply.seconds * 1000 - LATENCY_MS, 2) if reply.status == 201 else float("nan")


def verdicts(levels: dict[str, dict[str, Any]], first: dict[str, float]) -> list[dict[str, Any]]:
    """Each target of issue 14 with its figure and whether it was met."""
    out = []
    for level, (p50, p99) in TARGETS.items():
        luca_figures = levels[str(level)]["luca"]
        out.append({"target": f"Luca p50 overhead ≤ {p50:g} ms at {level}", "figure": luca_figures["p50_ms"],
                    "met": luca_figures["p50_ms"] <= p50})
        if p99 is not None:
            out.append({"target": f"Luca p99 overhead ≤ {p99:g} ms at {level}", "figure": luca_figures["p99_ms"],
                        "met": luca_figures["p99_ms"] <= p99})
    for level, figures in levels.items():
        for door, label in (("luca", "Luca"), ("luca_v1", "Luca /v1")):
            ratio = figures[f"{door}_over_litellm_p50"]
            out.append({"target": f"{label} p50 ≤ {PEER_RATIO}× LiteLLM's at {level}", "figure": ratio,
                        "met": ratio <= PEER_RATIO})
    out.append({"target": f"first answer after start ≤ {FIRST_OVER_WARM:g}× a warm answer's overhead",
                "figure": first["first_over_warm"], "met": first["first_over_warm"] <= FIRST_OVER_WARM})
    return out


def table(levels: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table printed at the end of the part."""
    lines = [f"{'clients':>7} | {'direct p50/p99':>15} | {'Luca p50/p99':>15} | {'Luca /v1 p50/p99':>16} | "
             f"{'LiteLLM p50/p99':>15} | {'Luca/LiteLLM p50':>16} | {'p99':>5} | {'/v1/LiteLLM p50':>15}"]
    for level, f in levels.items():
        cell = lambda n: f"{f[n]['p50_ms']:.1f} / {f[n]['p99_ms']:.1f}"  # noqa: E731
        lines.append(f"{level:>7} | {cell('direct'):>15} | {cell('luca'):>15} | {cell('luca_v1'):>16} | "
                     f"{cell('litellm'):>15} | {f['luca_over_litellm_p50']:>16} | {f['luca_over_litellm_p99']:>5} | "
                     f"{f['luca_v1_over_litellm_p50']:>15}")
    return "\n".join(lines)


def part_peer(ctx: Context) -> dict[str, Any]:
    """Overhead p50 and p99 of Luca, LiteLLM's proxy and a direct call at 1, 10 and 50 clients, interleaved."""
    if not LITELLM.exists():
        raise RuntimeError(f"{LITELLM} is missing: `make bench` installs it (tests/support/litellm/requirements.txt)")
    prov = provider(ctx, LATENCY_MS)
    tokens = ctx.data.mix.tokens
    with Luca(ctx, prov) as server:
        workers = int(server.env["WEB_CONCURRENCY"])
        first = {"first_ms": first_answer(server.base, tokens[-1])}
        proxy = LiteLLM(ctx.stack.tmp, prov.url, workers)
        ctx.stack.processes.append(proxy.start())
        try:
            proxy.answering()
            senders = {"direct": direct(prov.url), "luca": luca(server.base, tokens),
                       "luca_v1": luca_v1(server.base, tokens), "litellm": litellm(proxy.base)}
            levels: dict[str, dict[str, Any]] = {}
            for clients, rounds, per_client in plan(ctx):
                figures = interleaved(senders, clients, rounds, per_client,
                                      {"luca": server.gunicorn.pid, "luca_v1": server.gunicorn.pid,
                                       "litellm": proxy.pid})
                for q in ("p50", "p99"):
                    for door in ("luca", "luca_v1"):
                        figures[f"{door}_over_litellm_{q}"] = round(figures[door][f"{q}_ms"]
                                                                    / figures["litellm"][f"{q}_ms"], 2)
                        figures[f"{door}_minus_direct_{q}_ms"] = round(figures[door][f"{q}_ms"]
                                                                       - figures["direct"][f"{q}_ms"], 2)
                levels[str(clients)] = {**figures, "rounds": rounds, "per_client": per_client}
                print(f"  {clients} clients: " + ", ".join(f"{n} {figures[n]['p50_ms']}/{figures[n]['p99_ms']} ms"
                                                          for n in senders), flush=True)
        finally:
            ctx.stack.stop(proxy)
    first["warm_p50_ms"] = levels["1"]["luca"]["p50_ms"]
    first["first_over_warm"] = round(first["first_ms"] / max(0.01, first["warm_p50_ms"]), 2)
    result = {"provider_latency_ms": LATENCY_MS, "luca_workers": workers,
              "luca_threads": int(server.env["GUNICORN_THREADS"]), "litellm": "litellm[proxy]==1.108.7",
              "levels": levels, "first_answer": first}
    result["verdicts"] = verdicts(levels, first)
    print("\n" + table(levels), flush=True)
    for v in result["verdicts"]:
        print(f"  {v['target']}: {v['figure']} -> {'met' if v['met'] else 'MISSED'}", flush=True)
    return result


SETTINGS = [(2, 32), (1, 64), (4, 16), (2, 64)]  # (workers, threads) compared by `concurrency`; each ≥ 50 threads in all


def part_concurrency(ctx: Context) -> dict[str, Any]:
    """Luca's overhead at 10 and 50 clients under several worker × thread settings, interleaved.

    One setting runs at a time (several at once would hold more PostgreSQL connections than the
    server allows): each round starts every setting in turn, the order rotated, and measures both
    levels before stopping it.
    """
    prov = provider(ctx, LATENCY_MS)
    tokens = ctx.data.mix.tokens
    levels = ((10, 6), (50, 3)) if ctx.quick else ((10, 10), (50, 4))
    rounds = 2 if ctx.quick else 3
    names = ["direct"] + [f"{w}x{t}" for w, t in SETTINGS]
    samples: dict[int, dict[str, list[float]]] = {c: {n: [] for n in names} for c, _ in levels}
    errors: dict[int, dict[str, int]] = {c: dict.fromkeys(names, 0) for c, _ in levels}
    for r in range(rounds):
        for workers, threads in SETTINGS[r % len(SETTINGS):] + SETTINGS[:r % len(SETTINGS)]:
            name = f"{workers}x{threads}"
            server = Luca(ctx, prov)
            server.env = {**server.env, "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)}
            with server:
                for clients, per_client in levels:
                    for target, make in ((name, luca(server.base, tokens)), ("direct", direct(prov.url))):
                        times, failed = one_round(make, clients, per_client)
                        samples[clients][target] += times
                        errors[clients][target] += failed
            print(f"  round {r + 1}: {name} done", flush=True)
    figures = {str(c): {n: {"samples": len(samples[c][n]), "errors": errors[c][n],
                            "p50_ms": round(percentile(samples[c][n], 50), 2),
                            "p99_ms": round(percentile(samples[c][n], 99), 2)} for n in names} for c, _ in levels}
    for level, by_name in figures.items():
        print(f"  {level} clients: " + ", ".join(f"{n} {f['p50_ms']}/{f['p99_ms']} ms" for n, f in by_name.items()),
              flush=True)
    return {"provider_latency_ms": LATENCY_MS, "settings": names[1:], "rounds": rounds, "levels": figures}
