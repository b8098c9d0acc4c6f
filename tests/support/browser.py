"""The browser tests' tooling: Luca under a real gunicorn with its users (Site), headless Chromium driven by
Playwright, pages watched for script errors, CSP violations and dialogs, and the sign-in forms filled."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.support import ROOT
from tests.support.apps import provider_env
from tests.support.pages import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.support.processes import flask_command, gunicorn, luca_env

WAIT_MS = 15_000
SCREENSHOTS = ROOT / "docs" / "screenshots"


@dataclass
class Site:
    """Luca under gunicorn, with its users' tokens."""

    base: str
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """Call the API directly (not through the browser); return the status and the JSON body."""
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def conversation_with_answer(self, user: str, title: str | None, question: str) -> str:
        """Start a conversation and have one question answered, through the API; return its id."""
        status, conversation = self.api("POST", "/api/conversations", self.tokens[user],
                                        {"title": title} if title else {})
        assert status == 201, conversation
        status, exchange = self.api("POST", f"/api/conversations/{conversation['id']}/messages", self.tokens[user],
                                    {"content": question})
        assert status == 201, exchange
        return conversation["id"]

    def command(self, *args: str) -> str:
        """Run a flask command against the site's database; its output."""
        return flask_command(self.env, *args)


@contextmanager
def serve_site(provider: Any, tmp: Path, users: dict[str, list[str]], **settings: str) -> Iterator[Site]:
    """Luca in a real gunicorn on a migrated SQLite file in tmp, answering with provider; users (name: the
    arguments of `users create`) are created while gunicorn starts, and their tokens kept."""
    require_chromium()
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp}/luca.db", **provider_env(provider), WEB_CONCURRENCY="1",
                   JOBS_RETRY_BACKOFF="0.5", AI_TIMEOUT="10", **settings)
    flask_command(env, "db", "upgrade")
    with ThreadPoolExecutor(max(1, len(users))) as pool:
        created = {name: pool.submit(flask_command, env, "users", "create", *args) for name, args in users.items()}
        with gunicorn(env) as (base, _process):
            tokens = {name: future.result().strip().splitlines()[-1] for name, future in created.items()}
            yield Site(base, env, tokens)


@contextmanager
def chromium() -> Iterator[Any]:
    """One headless Chromium; Playwright is stopped afterwards."""
    require_chromium()
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@dataclass
class Watch:
    """What the page did that a test may assert on: dialogs, script errors, CSP violations, API answers."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)


def open_page(browser: Any, site: Site, **context_args: Any) -> tuple[Any, Any, Watch]:
    """A fresh context and page on the site, watched for dialogs, errors and API responses."""
    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(**{"base_url": site.base, "viewport": {"width": 1280, "height": 800},
                                     **context_args})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    watch = Watch()

    def on_dialog(dialog: Any) -> None:
        """Note a JavaScript dialog (alert, confirm, prompt) and dismiss it."""
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message: Any) -> None:
        """Note a Content-Security-Policy violation reported on the console."""
        if message.type == "error" and "Content Security Policy" in message.text:
            watch.errors.append(f"CSP: {message.text}")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.errors.append(f"script error: {error}"))
    page.on("response", lambda response: watch.responses.append((response.url, response.status))
            if "/api/" in response.url else None)
    return context, page, watch


def sign_in_with_token(page: Any, token: str, path: str = "/") -> None:
    """Open path and sign in with an API token, behind "Use an API token"."""
    page.goto(path)
    page.get_by_role("button", name="Use an API token").click()
    page.get_by_label("API token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in with the token").click()
    expect(page.locator("#user-email")).to_be_visible()


def sign_in_with_password(page: Any, email: str, password: str, path: str = "/") -> None:
    """Open path and sign in with email and password."""
    page.goto(path)
    form = page.locator("#signin-form")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#user-email")).to_have_text(email)


# -- fixtures and steps the browser test modules share (they import them from here) --

@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as browser:
        yield browser


Browsing = tuple[Any, Watch]  # a Playwright page and what it did
Servers = tuple[Any, Any]  # the primary and backup provider test servers


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """The directory the screenshots are written to."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def browsing(browser: Any, site: Site) -> Iterator[Browsing]:
    """A page at desktop size; no script error, CSP violation or dialog may happen on it."""
    context, page, watch = open_page(browser, site)
    try:
        yield page, watch
        assert watch.errors == []
        assert watch.dialogs == []
    finally:
        context.close()


def new_conversation(page: Any) -> str:
    """Start a conversation from the sidebar; return its id."""
    page.locator("#new-conversation").click()
    expect(page.locator("#conversation-view")).to_be_visible()
    page.wait_for_function("() => /^#\\/c\\//.test(location.hash)")
    return page.evaluate("() => location.hash.slice(4)")


def ask(page: Any, question: str) -> None:
    """Type a question in the composer and press Enter."""
    box = page.get_by_label("Your question")
    box.fill(question)
    box.press("Enter")


def last_answer(page: Any) -> Any:
    """The newest answer in the message list."""
    return page.locator("#message-list .message.from-luca").last


def wait_for_answer(page: Any, question: str) -> None:
    """Wait until the stored answer to question is shown (the stream has ended)."""
    answer = last_answer(page)
    expect(answer.locator(".message-text")).to_have_text(f"[primary] You asked: {question}")
    expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))


def unique(word: str) -> str:
    """A word no other test uses, so that no answer is served from the deduplication cache."""
    return f"{word}{uuid.uuid4().hex[:6]}"
