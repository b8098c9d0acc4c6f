"""What tests of the pages share: a page's audit against a strict CSP, the security headers, the browser.

The browser tests drive Debian's Chromium through Playwright; without it they skip (or fail, with
LUCA_REQUIRE_SERVICES=1).
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from werkzeug.test import TestResponse

from tests.support.services import service_missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class PageAudit(HTMLParser):
    """Collects what a strict Content-Security-Policy would refuse, and the page's scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.stylesheets: list[str] = []
        self.ids: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note inline handlers, style attributes and <style> blocks; record scripts and stylesheets."""
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag}> has an inline event handler {name}={value!r}")
            if name == "style":
                self.problems.append(f"<{tag}> has a style attribute")
            if name in {"href", "src", "action"} and value and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag}> has a javascript: URL")
        if attributes.get("id"):
            self.ids.append(attributes["id"] or "")
        if tag == "style":
            self.problems.append("a <style> block")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        """Leave a script element."""
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        """Text inside a <script> is an inline script."""
        if self._in_script and data.strip():
            self.problems.append(f"an inline script: {data.strip()[:60]!r}")


def audit(html: str) -> PageAudit:
    """Parse a page and return what was found."""
    parser = PageAudit()
    parser.feed(html)
    parser.close()
    return parser


def assert_security_headers(response: TestResponse) -> None:
    """The headers every response of the app carries (rq-dashboard's pages have a policy of their own)."""
    for name, value in REQUIRED_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers.get("Referrer-Policy") in {"no-referrer", "strict-origin-when-cross-origin"}
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]


def require_chromium() -> None:
    """Skip a browser test (or fail it, with LUCA_REQUIRE_SERVICES=1) where Debian's Chromium is missing."""
    if not CHROMIUM.exists():
        service_missing(f"the browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
