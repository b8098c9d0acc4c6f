"""A real OpenID Connect provider for tests: panva's oidc-provider (tests/support/oidc/), run by node.

``oidc_provider(redirect_uri)`` installs it from the committed package-lock.json (``npm ci``, once),
starts it on a free port with the launcher of tests/support/processes.py, and stops it after the
block. Its accounts (login name -> email) are in provider.mjs; any password signs in.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tests.support import ROOT
from tests.support.processes import Process, free_port, http_status, wait_until
from tests.support.services import service_missing

OIDC_DIR = ROOT / "tests" / "support" / "oidc"
CLIENT_ID = "luca"
CLIENT_SECRET = "luca-test-secret-that-is-long-enough"


def install() -> None:
    """`npm ci` in tests/support/oidc unless node_modules already matches package-lock.json."""
    lock = OIDC_DIR / "package-lock.json"
    installed = OIDC_DIR / "node_modules" / ".package-lock.json"  # npm writes it at the end of an install
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        service_missing("npm is not installed: the OpenID Connect provider of the tests needs node and npm")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {OIDC_DIR} failed:\n{result.stdout}{result.stderr}")


class OidcProvider(Process):
    """oidc-provider on 127.0.0.1 with one client (CLIENT_ID, CLIENT_SECRET) allowed to redirect to redirect_uri."""

    def __init__(self, redirect_uri: str, log: Path, port: int | None = None) -> None:
        node = shutil.which("node")
        if node is None:
            service_missing("node is not installed: the OpenID Connect provider of the tests needs it")
        self.port = port or free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": "/tmp", "PORT": str(self.port),
               "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_REDIRECT_URI": redirect_uri}
        super().__init__("oidc-provider", [str(node), str(OIDC_DIR / "provider.mjs")], env, log)

    @property
    def issuer(self) -> str:
        """Its issuer URL (also its base URL)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start it and wait until its discovery document answers; raise with its log if it exits."""
        super().start()
        discovery = self.issuer + "/.well-known/openid-configuration"
        wait_until(lambda: http_status(discovery) == 200 or not self.running(), 30, "oidc-provider start")
        if not self.running():
            raise RuntimeError(f"oidc-provider exited at start:\n{self.output()[-3000:]}")
        return self


@contextmanager
def oidc_provider(redirect_uri: str) -> Iterator[OidcProvider]:
    """Run the test provider on a free port for the block."""
    install()
    with tempfile.TemporaryDirectory(prefix="luca-oidc-") as tmp:
        provider = OidcProvider(redirect_uri, Path(tmp) / "oidc-provider.log").start()
        try:
            yield provider
        finally:
            provider.stop()
