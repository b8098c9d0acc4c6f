"""The two pages and their helpers (luca/headers.py adds the security headers to everything the app serves)."""
from __future__ import annotations

import os

from flask import render_template, url_for

from luca.web import bp


@bp.get("/")
def chat() -> str:
    """The chat page: sign in with a token, conversations, streamed answers, documents, search."""
    return render_template("web/chat.html")


@bp.get("/admin")
def admin() -> str:
    """The operator page: queues, cache, breakers, alerts and analytics (the data needs an admin's token)."""
    return render_template("web/admin.html")


def web_asset(filename: str) -> str:
    """The URL of a static file of the web client, with its modification time as a cache buster."""
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
