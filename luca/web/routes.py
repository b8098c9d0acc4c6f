"""The two pages and the security headers sent with them and with their static files."""
from __future__ import annotations

import os

from flask import Response, render_template, request, url_for

from luca.web import bp

# No 'unsafe-inline' anywhere: the pages have no inline scripts, handlers or style attributes.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'self'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@bp.get("/")
def chat() -> str:
    """The chat page: sign in with a token, conversations, streamed answers, documents, search."""
    return render_template("web/chat.html")


@bp.get("/admin")
def admin() -> str:
    """The operator page: queues, cache, breakers, alerts and analytics (the data needs an admin's token)."""
    return render_template("web/admin.html")


def web_asset(filename: str) -> str:
    """The URL of a static file a template links, with its modification time as a cache buster."""
    path = os.path.join(bp.static_folder or "", filename)
    try:
        version = int(os.stat(path).st_mtime)
    except OSError:
        version = 0
    return url_for("web.static", filename=filename, v=version)


@bp.context_processor
def template_helpers() -> dict[str, object]:
    """Helpers for the blueprint's templates."""
    return {"web_asset": web_asset}


@bp.after_request
def security_headers(response: Response) -> Response:
    """Add the security headers to every response of the blueprint: pages, static files, errors."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-cache")
    elif request.endpoint == "web.static":
        # The modules import each other by plain relative URL, without web_asset's ?v= (an import
        # map would be an inline script, which the CSP forbids), so every static file is
        # revalidated on use: a 304 while its ETag holds, the new file as soon as it changed.
        response.headers["Cache-Control"] = "no-cache"
    return response
