"""Single sign-on with OpenID Connect, end to end against a real provider (oidc-provider, started here).

Luca runs in-process (its test client is the browser's side for Luca's URLs); everything else is real
HTTP: the browser's way through the provider's login and consent forms, and Luca's calls to the
provider (discovery, token exchange, JWKS).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from luca.extensions import db
from luca.models import Organisation, User
from luca.sso import register_sso
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, OidcProvider, oidc_provider, sign_in_at_provider
from tests.support.processes import free_port

CALLBACK = "http://localhost/api/auth/oidc/callback"  # what url_for(_external=True) makes under the test client


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    """The OpenID Connect provider of this module's tests."""
    with oidc_provider(CALLBACK) as running:
        yield running


def sso_settings(issuer: str) -> dict[str, Any]:
    """The OIDC_* settings of an app that signs in through issuer."""
    return {"OIDC_ISSUER": issuer, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_NAME": "Lovelace ID"}


@pytest.fixture
def sso_app(app_factory: Callable[..., Flask], provider: OidcProvider) -> Flask:
    """An app whose single sign-on is the test provider, with an organisation that claims lovelace.example."""
    app = app_factory(**sso_settings(provider.issuer))
    with app.app_context():
        db.session.add(Organisation(name="Lovelace & Co", domain="lovelace.example"))
        db.session.commit()
    return app


def callback_url(client: FlaskClient, login: str, browser: requests.Session | None = None, **kwargs: Any) -> str:
    """Start a sign-in at Luca and go through the provider as login; the URL it sends the browser back to."""
    start = client.get("/api/auth/oidc/login")
    assert start.status_code == 302, start.get_json()
    return sign_in_at_provider(browser or requests.Session(), start.headers["Location"], login, CALLBACK, **kwargs)


def finish(client: FlaskClient, url: str) -> Any:
    """Send the provider's redirect to Luca's callback."""
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def sign_in(client: FlaskClient, login: str, browser: requests.Session | None = None) -> Any:
    """The whole sign-in as login: Luca's answer to the callback."""
    return finish(client, callback_url(client, login, browser))


def signed_in_user(client: FlaskClient, response: Any) -> dict[str, Any]:
    """The user a successful callback signed in (with a session cookie, sent back to the chat page)."""
    assert response.status_code == 302 and response.headers["Location"] == "/", response.get_json()
    return client.get("/api/auth/session").get_json()["user"]


def users(app: Flask) -> list[tuple[str, str]]:
    """Every user's email and name."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(select(User.email, User.name).order_by(User.id))]


@pytest.mark.sqlite_only
def test_the_login_redirects_with_state_nonce_and_pkce(sso_app: Flask, provider: OidcProvider) -> None:
    response = sso_app.test_client().get("/api/auth/oidc/login")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    query = dict(parse_qsl(location.query))
    assert f"{location.scheme}://{location.netloc}" == provider.issuer
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == CALLBACK
    assert query["response_type"] == "code" and set(query["scope"].split()) == {"openid", "email", "profile"}
    assert query["state"] and query["nonce"] and query["code_challenge"] and query["code_challenge_method"] == "S256"


def test_first_sign_in_creates_the_user(sso_app: Flask) -> None:
    client = sso_app.test_client()
    user = signed_in_user(client, sign_in(client, "ada"))
    assert user["email"] == "ada@lovelace.example"
    with sso_app.app_context():
        claimer = db.session.execute(select(Organisation.id).where(Organisation.domain == "lovelace.example")).scalar()
    assert (user["organisation_id"], user["role"]) == (claimer, "member")
    assert users(sso_app) == [("ada@lovelace.example", "Ada Lovelace")]


def test_second_sign_in_finds_the_same_user(sso_app: Flask) -> None:
    browser = requests.Session()  # the provider remembers the person: the second time asks for nothing
    first, second = sso_app.test_client(), sso_app.test_client()
    first_user = signed_in_user(first, sign_in(first, "ada", browser))
    second_user = signed_in_user(second, sign_in(second, "ada", browser))
    assert second_user["id"] == first_user["id"]
    assert len(users(sso_app)) == 1


def test_the_email_is_matched_whatever_its_case(sso_app: Flask) -> None:
    first, again = sso_app.test_client(), sso_app.test_client()
    first_user = signed_in_user(first, sign_in(first, "ada"))
    again_user = signed_in_user(again, sign_in(again, "ADA"))  # the provider says Ada@Lovelace.example
    assert again_user["id"] == first_user["id"]
    assert users(sso_app) == [("ada@lovelace.example", "Ada Lovelace")]


def test_an_existing_user_is_signed_in_by_the_verified_email(sso_app: Flask) -> None:
    with sso_app.app_context():
        db.session.add(User(email="grace@hopper.example", name="Rear Admiral Hopper"))
        db.session.commit()
    client = sso_app.test_client()
    assert signed_in_user(client, sign_in(client, "grace"))["name"] == "Rear Admiral Hopper"
    assert users(sso_app) == [("grace@hopper.example", "Rear Admiral Hopper")]


def test_an_unverified_email_is_refused(sso_app: Flask) -> None:
    response = sign_in(sso_app.test_client(), "unverified")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "sso_email_unverified"
    assert users(sso_app) == []


def test_no_email_is_refused(sso_app: Flask) -> None:
    response = sign_in(sso_app.test_client(), "no-email")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "sso_no_email"
    assert users(sso_app) == []


def test_a_tampered_state_is_refused(sso_app: Flask) -> None:
    client = sso_app.test_client()
    parts = urlsplit(callback_url(client, "ada"))
    query = dict(parse_qsl(parts.query))
    query["state"] = query["state"][:-1] + ("A" if query["state"][-1] != "A" else "B")
    response = client.get(f"{parts.path}?{urlencode(query)}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "sso_state_mismatch"
    assert users(sso_app) == []


def test_a_callback_in_another_browser_is_refused(sso_app: Flask) -> None:
    url = callback_url(sso_app.test_client(), "ada")  # someone else's sign-in, or a link planted for a victim
    response = finish(sso_app.test_client(), url)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "sso_state_mismatch"
    assert users(sso_app) == []


def test_a_callback_is_used_once(sso_app: Flask) -> None:
    client = sso_app.test_client()
    url = callback_url(client, "ada")
    signed_in_user(client, finish(client, url))
    replay = finish(client, url)
    assert replay.status_code == 400
    assert replay.get_json()["error"]["code"] == "sso_state_mismatch"


def test_an_id_token_for_another_audience_is_refused(sso_app: Flask) -> None:
    response = sign_in(sso_app.test_client(), "wrong-audience")  # validly signed by the provider, aud another client
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "sso_invalid_token"
    assert users(sso_app) == []


def test_a_cancelled_sign_in_is_refused(sso_app: Flask) -> None:
    client = sso_app.test_client()
    response = finish(client, callback_url(client, "ada", cancel=True))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "sso_refused"
    assert users(sso_app) == []


@pytest.mark.sqlite_only
def test_a_provider_that_is_down_at_the_login_is_a_503(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(**sso_settings(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    response = app.test_client().get("/api/auth/oidc/login")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "sso_unavailable"
    assert response.headers["Retry-After"]


@pytest.mark.sqlite_only
def test_an_issuer_that_is_no_openid_provider_is_a_503(app_factory: Callable[..., Flask], servers: Any) -> None:
    primary, _ = servers  # a real HTTP server without a discovery document (the fake AI provider)
    response = app_factory(**sso_settings(primary.url)).test_client().get("/api/auth/oidc/login")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "sso_unavailable"


@pytest.mark.sqlite_only
def test_a_provider_that_goes_down_before_the_callback_is_a_503(app_factory: Callable[..., Flask],
                                                                 tmp_path: Path) -> None:
    provider = OidcProvider(CALLBACK, tmp_path / "oidc-provider.log").start()
    try:
        app = app_factory(**sso_settings(provider.issuer))
        client = app.test_client()
        url = callback_url(client, "ada")
    finally:
        provider.stop()
    response = finish(client, url)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "sso_unavailable"
    assert users(app) == []


def test_an_email_whose_domain_no_organisation_claims_is_refused(sso_app: Flask) -> None:
    response = sign_in(sso_app.test_client(), "grace")  # hopper.example: nobody claims it
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "signup_closed"
    assert users(sso_app) == []


@pytest.mark.sqlite_only
def test_the_sign_in_page_offers_the_provider(sso_app: Flask) -> None:
    page = sso_app.test_client().get("/").get_data(as_text=True)
    assert '<a class="button" id="signin-sso" href="/api/auth/oidc/login">Sign in with Lovelace ID</a>' in page


@pytest.mark.sqlite_only
def test_without_an_issuer_there_is_no_single_sign_on(client: FlaskClient) -> None:
    assert "signin-sso" not in client.get("/").get_data(as_text=True)
    assert client.get("/api/auth/oidc/login").status_code == 404


def test_an_issuer_without_client_credentials_stops_the_start() -> None:
    app = Flask(__name__)
    app.config.update(OIDC_ISSUER="https://id.example", OIDC_CLIENT_ID="", OIDC_CLIENT_SECRET="")
    with pytest.raises(ValueError, match="OIDC_CLIENT_ID"):
        register_sso(app)
