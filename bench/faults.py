"""Fault drills: break one part of a real Luca deployment under load and show that nothing is lost.

    python -m bench.faults                 # every drill at full length, then a summary table
    python -m bench.faults --fast          # shortened outages (what tests/test_faults.py runs)
    python -m bench.faults --only redis    # one drill: redis, postgres, provider, worker, hup

Each drill runs against processes of its own on spare ports (bench/faults_stack.py, built on the
shared launcher in tests/support/processes.py): a PostgreSQL instance (initdb'd in a temporary
directory), a redis-server, two fake AI providers ("primary" and "backup",
tests/support/provider.py), gunicorn with the project's config and RQ workers. Load comes from a
bounded pool of loopback HTTP clients (bench/faults_load.py). The drills (bench/faults_drills.py):

    redis     Redis killed -9 under load, restarted after the outage: no 5xx, every title and file done
    postgres  PostgreSQL stopped under load: fast 503s only, every acknowledged write kept, back by itself
    provider  the primary provider answering 500: backup answers, AI-primary opens and closes again
    worker    an RQ worker and its work horse SIGKILLed mid-extraction: a new worker finishes every file
    hup       SIGHUP to gunicorn several times under load: every request answered 2xx

The exit status is 1 when any drill lost work or missed one of its conditions.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace

from bench.faults_drills import DRILLS, FAST, FULL, Profile, Report
from bench.faults_stack import PostgresServer, Stack, missing_binaries

__all__ = ["DRILLS", "FAST", "FULL", "PostgresServer", "Profile", "Report", "Stack", "main", "run_drills",
           "summary"]


def summary(reports: list[tuple[Report, float]]) -> str:
    """The table printed at the end: drill, sent, statuses, lost, fault latency, duration, result."""
    header = f"{'drill':<17} {'sent':>6}  {'statuses':<40} {'lost':>9}  {'fault max':>9}  {'took':>6}  result"
    rows = [f"{r.drill:<17} {r.sent:>6}  {r.status_text():<40} {f'{r.lost}/{r.tracked}':>9}  "
            f"{r.fault_latency:>7.2f} s  {seconds:>4.0f} s  {r.verdict}"
            for r, seconds in reports]
    return "\n".join([header, "-" * len(header), *rows])


def run_drills(names: list[str], profile: Profile) -> list[tuple[Report, float]]:
    """Run the named drills one after another, printing each report as it finishes."""
    results = []
    for name in names:
        print(f"-- {name} ({profile.name}) ...", flush=True)
        started = time.monotonic()
        report = DRILLS[name](profile)
        results.append((report, time.monotonic() - started))
        print(report.describe(), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the drills; 0 when every one passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="shortened outages (a few seconds each)")
    parser.add_argument("--only", choices=sorted(DRILLS), action="append", help="run this drill (repeatable)")
    parser.add_argument("--provider-outage", type=float, metavar="SECONDS",
                        help="how long the primary provider is down (default: 60, or 6 with --fast)")
    args = parser.parse_args(argv)
    problem = missing_binaries()
    if problem:
        print(f"cannot run the fault drills: {problem}", file=sys.stderr)
        return 2
    profile = FAST if args.fast else FULL
    if args.provider_outage is not None:
        profile = replace(profile, provider_outage=args.provider_outage)
    # SIGTERM unwinds like Ctrl-C, so every process and temporary directory is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run_drills(args.only or list(DRILLS), profile)
    print(f"\nFault drills ({profile.name}):\n{summary(results)}")
    return 0 if all(report.passed for report, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
