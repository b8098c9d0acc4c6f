"""The web client: the chat page at /, the operator page at /admin, the pages of reset and invitation links.

The pages are static HTML plus ES modules (one entry module each); every byte of data they show
comes from the public REST API, called from the browser with the session cookie or an API token. register_web()
mounts them.
"""
from __future__ import annotations

from flask import Blueprint, Flask

STATIC_URL_PATH = "/static/web"

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path=STATIC_URL_PATH)

from luca.web import routes  # noqa: E402,F401  (routes and hooks attach themselves to bp)


def register_web(app: Flask) -> None:
    """Mount the chat page, the operator page and their static files on app."""
    app.register_blueprint(bp)
