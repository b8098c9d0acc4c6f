"""The web client's pages and static files: served, with strict security headers and CSP-safe HTML."""
from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.pages import assert_security_headers, audit

# Runs once, on SQLite: pages and static files are the same whatever the database.
pytestmark = pytest.mark.sqlite_only

PAGES = ["/", "/admin", "/reset-password?token=t", "/accept-invitation?token=t"]


@pytest.fixture
def web(app: Flask) -> Client:
    """A client of the app (create_app mounts the web blueprint)."""
    return Client(app.test_client())


class Client:
    """A test client whose responses are read whole and closed at once (static files are open files)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str) -> TestResponse:
        """GET path; the body stays readable after the response is closed."""
        response = self.client.get(path)
        response.get_data()
        response.close()
        return response


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html_with_security_headers(web: Client, path: str) -> None:
    response = web.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html" and response.mimetype_params.get("charset") == "utf-8"
    assert_security_headers(response)
    assert response.get_data(as_text=True).lstrip().lower().startswith("<!doctype html>")


@pytest.mark.parametrize("path", PAGES)
def test_pages_hold_nothing_a_strict_csp_would_block(web: Client, path: str) -> None:
    page = audit(web.get(path).get_data(as_text=True))
    assert page.problems == []
    assert len(page.scripts) == 1
    script = page.scripts[0]
    assert script.get("type") == "module" and (script.get("src") or "").startswith("/static/web/")
    assert page.stylesheets and all(href.startswith("/static/web/") for href in page.stylesheets)
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"


def test_pages_hold_no_user_data_and_load_nothing_from_elsewhere(web: Client) -> None:
    for path in PAGES:
        html = web.get(path).get_data(as_text=True)
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "an external resource"
        assert "luca_" not in html.replace("luca_…", "")  # no token is ever written into a page


def test_the_chat_page_is_labelled_and_keyboard_usable(web: Client) -> None:
    html = web.get("/").get_data(as_text=True)
    for control in ("signin-email", "signin-password", "token-input", "search-input", "composer-input",
                    "rename-input", "file-input", "password-current", "password-new", "token-name", "token-expiry",
                    "invite-email", "invite-role"):
        assert f'for="{control}"' in html, f"{control} has no label"
    assert 'aria-live="polite"' in html and 'role="log"' in html
    assert '<meta name="viewport"' in html


def test_the_sign_in_form_offers_sign_up_only_when_it_is_open(app_factory) -> None:
    closed = Client(app_factory().test_client()).get("/").get_data(as_text=True)
    assert 'id="signin-form"' in closed and 'id="token-form"' in closed and "Use an API token" in closed
    assert 'id="signup-form"' not in closed
    opened = Client(app_factory(SIGNUP="open").test_client()).get("/").get_data(as_text=True)
    assert 'id="signup-form"' in opened and 'for="signup-password"' in opened


def test_a_forgotten_password_is_mailed_only_where_mail_is_set_up(app_factory) -> None:
    without = Client(app_factory().test_client()).get("/").get_data(as_text=True)
    assert 'id="forgot-form"' not in without and "operator can give you a link" in without
    mailed = Client(app_factory(MAIL_URL="smtp://127.0.0.1:1").test_client()).get("/").get_data(as_text=True)
    assert 'id="forgot-form"' in mailed and 'for="forgot-email"' in mailed


@pytest.mark.parametrize("path,form", [("/reset-password?token=t", "reset"), ("/accept-invitation?token=t", "invitation")])
def test_the_link_pages_hold_their_form_and_never_the_token(web: Client, path: str, form: str) -> None:
    html = web.get(path).get_data(as_text=True)
    assert f'data-form="{form}"' in html and 'for="account-password"' in html
    assert ('for="account-name"' in html) is (form == "invitation")
    assert "token=t" not in html  # the page's script reads it from the address, never the server from the page


def test_the_operator_page_can_say_not_authorised(web: Client) -> None:
    html = web.get("/admin").get_data(as_text=True)
    assert "Not authorised" in html
    assert 'href="/admin/rq/"' in html


@pytest.mark.parametrize("filename,mimetype", [
    ("app.js", "text/javascript"),
    ("chat.js", "text/javascript"),
    *((f"chat/{name}.js", "text/javascript")
      for name in ("state", "list", "search", "history", "messages", "composer", "header", "files", "settings",
                   "org", "usage")),
    ("admin.js", "text/javascript"),
    ("spend.js", "text/javascript"),
    ("account.js", "text/javascript"),
    ("luca.css", "text/css"),
    ("favicon.svg", "image/svg+xml"),
])
def test_static_files_are_served_with_their_types_and_headers(web: Client, filename: str,
                                                              mimetype: str) -> None:
    response = web.get(f"/static/web/{filename}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert_security_headers(response)
    assert response.get_data()


def test_page_asset_urls_resolve_and_carry_a_version(web: Client) -> None:
    html = web.get("/").get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="(/static/web/[^"]+)"', html)
    assert urls
    for url in urls:
        assert re.search(r"\?v=\d+$", url), url
        assert web.get(url).status_code == 200, url


MODULE_IMPORTS = {
    "chat.js": ["./app.js", "./chat/composer.js", "./chat/files.js", "./chat/header.js",
                "./chat/history.js", "./chat/list.js", "./chat/org.js", "./chat/search.js", "./chat/settings.js",
                "./chat/state.js", "./chat/usage.js"],
    "chat/state.js": [],
    "chat/list.js": ["../app.js", "./state.js"],
    "chat/search.js": ["../app.js", "./history.js", "./list.js", "./messages.js", "./state.js"],
    "chat/history.js": ["../app.js", "./composer.js", "./files.js", "./header.js", "./list.js",
                        "./messages.js", "./state.js"],
    "chat/messages.js": ["../app.js", "../spend.js", "./state.js"],
    "chat/composer.js": ["../app.js", "./header.js", "./list.js", "./messages.js", "./state.js"],
    "chat/header.js": ["../app.js", "./list.js", "./state.js"],
    "chat/files.js": ["../app.js", "./state.js"],
    "chat/settings.js": ["../app.js", "./state.js"],
    "chat/org.js": ["../app.js", "./state.js"],
    "chat/usage.js": ["../app.js", "../spend.js"],
    "spend.js": ["./app.js"],
    "admin.js": ["./app.js", "./spend.js"],
    "account.js": ["./app.js"],
}


def test_modules_only_import_each_other(web: Client) -> None:
    for name, expected in MODULE_IMPORTS.items():
        source = web.get(f"/static/web/{name}").get_data(as_text=True)
        imports = re.findall(r'from\s+"([^"]+)"', source)
        assert imports == expected, (name, imports)
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "eval(" not in source


def test_only_the_snippet_helper_touches_inner_html(web: Client) -> None:
    source = web.get("/static/web/app.js").get_data(as_text=True)
    assert source.count("innerHTML =") == 1
    assert "SAFE_SNIPPET.test(text)" in source


def test_an_imported_module_is_revalidated_so_a_changed_one_is_never_served_stale(web: Client) -> None:
    response = web.get("/static/web/chat/state.js")  # imported by relative URL, without ?v=
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"]
    unchanged = web.client.get("/static/web/chat/state.js", headers={"If-None-Match": response.headers["ETag"]})
    unchanged.close()
    assert unchanged.status_code == 304


def test_a_missing_static_file_is_a_json_404_with_headers(web: Client) -> None:
    response = web.get("/static/web/nothing-here.js")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert_security_headers(response)


def test_the_api_does_not_describe_the_pages_and_its_answers_carry_the_headers_too(web: Client) -> None:
    response = web.get("/api/openapi.json")
    assert response.status_code == 200
    assert "/" not in response.get_json()["paths"] and "/admin" not in response.get_json()["paths"]
    assert_security_headers(response)
    assert_security_headers(web.get("/api/me"))
