"""The pages and their helpers (luca/headers.py adds the security headers to everything the app serves)."""
from __future__ import annotations

import os

from flask import Response, render_template, request, url_for

from luca.web import bp


@bp.get("/")
def chat() -> str:
    """The chat page: sign in with a token, conversations, streamed answers, documents, search."""
    return render_template("web/chat.html")


@bp.get("/admin")
def admin() -> str:
    """The operator page: queues, cache, breakers, alerts and analytics (the data needs an admin's token)."""
    return render_template("web/admin.html")


@bp.get("/reset-password")
def reset_password() -> str:
    """A reset link's page: choose a new password (the link's ?token= is read by the page's script)."""
    return render_template("web/account.html", form="reset")


@bp.get("/accept-invitation")
def accept_invitation() -> str:
    """An invitation link's page: join the organisation with a name and a password."""
    return render_template("web/account.html", form="invitation")


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
def revalidate_static_files(response: Response) -> Response:
    """Make browsers revalidate the web client's static files on every use (security headers: luca/headers.py)."""
    if request.endpoint == "web.static":
        # The modules import each other by plain relative URL, without web_asset's ?v= (an import
        # map would be an inline script, which the CSP forbids), so every static file is
        # revalidated on use: a 304 while its ETag holds, the new file as soon as it changed.
        response.headers["Cache-Control"] = "no-cache"
    return response

