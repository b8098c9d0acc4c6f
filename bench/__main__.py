"""Luca's benchmarks: `python -m bench [--quick] [PART ...]` (make bench runs them all).

Parts: mix, capacity, users10k, overhead, peer, concurrency, sendpath, throughput, deep, search, retrieval,
breaker, dedup.
Each part starts the real stack it needs (gunicorn with gunicorn.conf.py, an RQ worker, a
PostgreSQL database of its own on the local server, a Redis of its own, and local
OpenAI-compatible providers with a set answer latency), drives load from other processes
(locust, wrk, or client threads in this process — never inside the server), prints its
figures beside their targets, and records them in docs/benchmarks.json, from which
docs/BENCHMARKS.md is rendered.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import parts, peer, sendpath
from bench.report import render
from bench.stack import ROOT, Stack

RESULTS = ROOT / "docs" / "benchmarks.json"
ORDER = ["mix", "capacity", "users10k", "overhead", "peer", "concurrency", "sendpath", "throughput", "deep", "search",
         "retrieval", "breaker", "dedup"]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    def first(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "unknown")
    return {"cpus": int(first(["nproc"]) or 0), "cpu": cpu, "memory": memory, "python": platform.python_version(),
            "postgresql": first(["psql", "--version"]), "redis": first(["redis-server", "--version"]),
            "kernel": platform.release()}


def write_document(results: dict[str, Any]) -> None:
    """Render docs/BENCHMARKS.md: the figures, then the hand-kept analysis of missed targets."""
    notes = ROOT / "bench" / "notes.md"
    (ROOT / "docs" / "BENCHMARKS.md").write_text(render(results, notes.read_text() if notes.exists() else ""))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and rewrite docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description="Luca's benchmarks")
    parser.add_argument("parts", nargs="*", help=f"parts to run (default: all): {', '.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument("--latency-ms", type=int, default=800, help="the providers' answer latency")
    parser.add_argument("--common-share", type=float, default=0.5,
                        help="share of the mix's sends that are common first questions (0-1)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite docs/BENCHMARKS.md from docs/benchmarks.json and bench/notes.md")
    args = parser.parse_args(argv)
    if args.render:
        write_document(json.loads(RESULTS.read_text()))
        return 0
    unknown = set(args.parts) - set(ORDER)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    chosen = [name for name in ORDER if name in args.parts] or ORDER
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"parts": {}}
    command = "python -m bench" + (" --quick" if args.quick else "") + \
        (f" --latency-ms {args.latency_ms}" if args.latency_ms != 800 else "") + \
        (f" --common-share {args.common_share}" if args.common_share != 0.5 else "") + \
        ("" if chosen == ORDER else " " + " ".join(chosen))
    print(f"Luca benchmarks: {', '.join(chosen)}", flush=True)
    started = time.monotonic()
    with Stack() as stack:
        stack.start_redis()
        database = stack.create_database()
        engine = sa.create_engine(database)
        data = parts.seed(engine, big=any(p in chosen for p in ("deep", "search")), crowd="users10k" in chosen)
        context = parts.Context(stack=stack, database=database, engine=engine, data=data, quick=args.quick,
                                latency_ms=args.latency_ms, common_share=args.common_share)
        try:
            for name in chosen:
                print(f"\n== {name} ==", flush=True)
                part_started = time.monotonic()
                run = next(getattr(m, f"part_{name}") for m in (parts, peer, sendpath) if hasattr(m, f"part_{name}"))
                figures = run(context)
                figures["wall_seconds"] = round(time.monotonic() - part_started)
                figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                figures["command"] = command
                results["parts"][name] = figures
                print(json.dumps(figures, indent=2, default=str), flush=True)
        finally:
            engine.dispose()
    results["machine"] = machine()
    results["last_run"] = {"command": command, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "seconds": round(time.monotonic() - started)}
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_document(results)
    print(f"\nwrote docs/BENCHMARKS.md ({round(time.monotonic() - started)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
