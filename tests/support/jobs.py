"""RQ mode: a web app and the environment of worker processes that share its database, Redis and provider."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from tests.support.processes import Worker, worker_burst
from tests.support.services import RedisTarget


@dataclass
class Stack:
    """A web app, and how to run workers beside it: their environment, queue prefix, Redis and log directory."""

    app: Flask
    settings: dict[str, Any]
    env: dict[str, str]
    prefix: str
    redis: RedisTarget
    logs: Path

    def worker(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        """Run `python worker.py --burst` until the queues are empty."""
        return worker_burst(self.env, *args, timeout=timeout)

    def start_worker(self) -> Worker:
        """Start a long-running worker process (no reconciler), logging to a file of its own."""
        return Worker(self.env, self.logs / f"worker-{len(list(self.logs.glob('worker-*')))}.log",
                      "--no-reconcile").start()
