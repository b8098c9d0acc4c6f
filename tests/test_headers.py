"""Security headers on every page of the app: Luca's pages, the API reference and rq-dashboard's pages."""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import sync_playwright
from rq import Queue

from tests.support.api import basic, create_user
from tests.support.pages import CHROMIUM, CHROMIUM_ARGS, assert_security_headers, audit, require_chromium
from tests.support.processes import flask_command, gunicorn, luca_env
from tests.support.services import RedisTarget

# Runs once, on SQLite: headers are the same whatever the database.
pytestmark = pytest.mark.sqlite_only

ADMIN = "ops@example.com"


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: sources}."""
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


class InlineScripts(HTMLParser):
    """The text of every script element without a src attribute, as a browser hashes it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Start collecting an inline script."""
        if tag == "script" and "src" not in dict(attrs):
            self._current = []

    def handle_data(self, data: str) -> None:
        """Collect the script's text."""
        if self._current is not None:
            self._current.append(data)

    def handle_endtag(self, tag: str) -> None:
        """Keep the finished script."""
        if tag == "script" and self._current is not None:
            self.scripts.append("".join(self._current))
            self._current = None


def inline_scripts(html: str) -> list[str]:
    """The inline scripts of a page."""
    parser = InlineScripts()
    parser.feed(html)
    parser.close()
    return parser.scripts


@pytest.fixture
def dash_app(app_factory: Callable[..., Flask], redis_target: RedisTarget) -> Flask:
    """An app on the test Redis (create_app mounts rq-dashboard at /admin/rq)."""
    return app_factory(**redis_target.overrides())


@pytest.mark.parametrize("path", ["/", "/admin", "/api/docs"])
def test_lucas_pages_carry_the_strict_policy_frame_denial_and_nosniff(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert_security_headers(response)


def test_the_api_reference_holds_nothing_the_strict_policy_would_block(client: Any) -> None:
    page = audit(client.get("/api/docs").get_data(as_text=True))
    assert page.problems == [] and page.scripts == []
    [stylesheet] = page.stylesheets
    response = client.get(stylesheet)
    assert response.status_code == 200 and response.mimetype == "text/css"
    response.close()


def dashboard_pages(rq_queue: Queue) -> list[str]:
    """Every kind of rq-dashboard page, for a queue holding one job."""
    [job_id] = rq_queue.job_ids
    return ["/admin/rq/", "/admin/rq/0/view/workers", "/admin/rq/0/view/jobs",
            f"/admin/rq/0/view/jobs/{rq_queue.name}/queued/8/asc/1", f"/admin/rq/0/view/job/{job_id}"]


def test_every_dashboard_page_carries_frame_denial_nosniff_and_a_policy_for_its_own_script(
        dash_app: Flask, rq_queue: Queue) -> None:
    token = create_user(dash_app, ADMIN, admin=True)[1]
    client = dash_app.test_client()
    for path in dashboard_pages(rq_queue):
        response = client.get(path, headers=basic(ADMIN, token))
        assert response.status_code == 200 and response.mimetype == "text/html", path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        policy = directives(response.headers["Content-Security-Policy"])
        script = inline_scripts(response.get_data(as_text=True))[-1]  # the one its base template ends with
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert sorted(policy["script-src"]) == sorted(["'self'", "'unsafe-eval'", f"'sha256-{digest}'"]), path
        assert policy["default-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
        assert policy["base-uri"] == ["'none'"] and policy["connect-src"] == ["'self'"]


def test_a_dashboard_sign_in_prompt_carries_the_headers_too(dash_app: Flask) -> None:
    response = dash_app.test_client().get("/admin/rq/0/view/jobs")
    assert response.status_code == 401
    assert response.headers["X-Frame-Options"] == "DENY"
    assert directives(response.headers["Content-Security-Policy"])["frame-ancestors"] == ["'none'"]


# --- in a browser -------------------------------------------------------------------------------

@pytest.fixture
def dashboard_site(tmp_path: Path, redis_target: RedisTarget) -> Iterator[tuple[str, str]]:
    """Luca under gunicorn on the test Redis; its base URL and an admin's token."""
    require_chromium()
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", WEB_CONCURRENCY="1",
                   REDIS_URL=redis_target.url, REDIS_KEY_PREFIX=redis_target.prefix)
    flask_command(env, "db", "upgrade")
    token = flask_command(env, "users", "create", ADMIN, "--admin").strip().splitlines()[-1]
    with gunicorn(env) as (base, _process):
        yield base, token


@pytest.mark.slow
def test_rq_dashboard_runs_its_scripts_under_its_policy_in_a_browser(dashboard_site: tuple[str, str],
                                                                      rq_queue: Queue) -> None:
    base, token = dashboard_site
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=base, http_credentials={"username": ADMIN, "password": token})
            page = context.new_page()
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" and "Content Security Policy" in message.text else None)
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.goto("/admin/rq/")
            # The queue table is drawn by the page's script from queues.json with an underscore template.
            page.wait_for_selector(f"#queues td:text-is('{rq_queue.name}')", timeout=15_000)
            page.goto(f"/admin/rq/0/view/jobs/{rq_queue.name}/queued/8/asc/1")
            page.wait_for_selector(f"text={rq_queue.job_ids[0]}", timeout=15_000)
            page.goto("/api/docs")
            assert page.eval_on_selector("section", "s => getComputedStyle(s).borderTopStyle") == "solid"
        finally:
            browser.close()
    assert problems == []
