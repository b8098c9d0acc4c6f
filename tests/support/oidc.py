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
from html.parser import HTMLParser
from pathlib import Path
from typing import Self
from urllib.parse import urljoin

import requests

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


class FormReader(HTMLParser):
    """The first form of a page: its action and its inputs' names and values; and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the form, its inputs and links."""
        found = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = found.get("action", "")
        elif tag == "input" and found.get("name"):
            self.fields[found["name"]] = found.get("value", "")
        elif tag == "a" and found.get("href"):
            self.links.append(found["href"])


def sign_in_at_provider(browser: requests.Session, url: str, login: str, stop_at: str,
                        cancel: bool = False) -> str:
    """Follow the provider from its authorization URL through its login and consent forms like a browser.

    Returns the first URL it sends the browser to that starts with stop_at (Luca's callback).
    Any password signs in; cancel=True follows the login page's cancel link instead.
    """
    for _ in range(20):
        if url.startswith(stop_at):
            return url
        response = browser.get(url, allow_redirects=False, timeout=10)
        while response.status_code == 200:  # a form of the provider's: fill it in and send it
            page = FormReader()
            page.feed(response.text)
            assert page.action is not None, f"no form at {url}: {response.text[:500]}"
            if cancel:
                abort = next(link for link in page.links if link.endswith("/abort"))
                response = browser.get(urljoin(url, abort), allow_redirects=False, timeout=10)
                break
            fields = {**page.fields, "login": login, "password": "any password"} if "login" in page.fields \
                else page.fields
            url = urljoin(url, page.action)
            response = browser.post(url, data=fields, allow_redirects=False, timeout=10)
        assert response.is_redirect, f"{response.status_code} from {url}: {response.text[:500]}"
        url = urljoin(url, response.headers["Location"])
    raise AssertionError(f"the provider never redirected to {stop_at}")
