"""Security headers on every response of the app; rq-dashboard's pages get a policy its own scripts run under.

Luca's pages (/, /admin, /api/docs) hold no inline script, event handler or style, so their
Content-Security-Policy allows nothing but files from this origin. rq-dashboard's templates are
not Luca's: each page ends with one inline script, and its tables are drawn by underscore
templates, which compile with `new Function` — see dashboard_policy().
"""
from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask
from flask.wrappers import Response

from luca.admin.dashboard import is_dashboard_request

# Directives both policies share: nothing from elsewhere, no plugins, no framing, no <base>.
SHARED_DIRECTIVES = [
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
]
CONTENT_SECURITY_POLICY = "; ".join(["default-src 'self'", "script-src 'self'", "style-src 'self'",
                                     *SHARED_DIRECTIVES])
HEADERS = {  # on every response; a value the view (or the dashboard policy) set is kept
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}
# Script elements without a src attribute, and what they hold.
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)


def dashboard_policy(html: str) -> str:
    """The Content-Security-Policy of one rq-dashboard page, given the page.

    - script-src: its own files, the page's last inline script by SHA-256 (the one its base
      template ends with; a script injected into the page's content would come before it and
      stay blocked), and 'unsafe-eval', without which underscore's _.template() — it draws
      every table of the dashboard — cannot compile its templates.
    - style-src-attr 'unsafe-inline': its templates put style attributes on a few buttons;
      <style> blocks and style sheets from elsewhere stay refused.
    """
    scripts = _INLINE_SCRIPT.findall(html)
    script_src = ["'self'", "'unsafe-eval'"]
    if scripts:
        digest = base64.b64encode(hashlib.sha256(scripts[-1].encode()).digest()).decode()
        script_src.append(f"'sha256-{digest}'")
    return "; ".join(["default-src 'self'", f"script-src {' '.join(script_src)}", "style-src 'self'",
                      "style-src-attr 'unsafe-inline'", *SHARED_DIRECTIVES])


def add_security_headers(response: Response) -> Response:
    """after_request: the security headers, on every response (a view's own values are kept)."""
    headers = response.headers
    present = {name.lower() for name in headers.keys()}  # one pass: setdefault() scans the headers each time
    if response.mimetype == "text/html":
        if "cache-control" not in present:
            headers.add("Cache-Control", "no-cache")
        if "content-security-policy" not in present and is_dashboard_request() and not response.is_streamed:
            headers.add("Content-Security-Policy", dashboard_policy(response.get_data(as_text=True)))
            present.add("content-security-policy")
    for name, value in HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    return response


def register_security_headers(app: Flask) -> None:
    """Add the security headers to every response of app."""
    app.after_request(add_security_headers)
