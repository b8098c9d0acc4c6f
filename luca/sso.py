"""Single sign-on with OpenID Connect (Authlib): GET /api/auth/oidc/login and /api/auth/oidc/callback.

The login sends the browser to OIDC_ISSUER's authorization endpoint with a state, a nonce and a
PKCE challenge (kept in Flask's signed session cookie until the callback). The callback exchanges
the code, verifies the ID token (signature through the provider's JWKS, issuer, audience, expiry,
nonce), requires a verified email and signs its owner in through sign_in_by_email(). Every failure
is the JSON error shape with a 4xx (503 when the provider does not answer), and creates nothing.
"""
from __future__ import annotations

import logging
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, redirect, request, url_for
from flask.typing import ResponseReturnValue
from joserfc.errors import JoseError

from luca.accounts import service as accounts
from luca.errors import APIError

log = logging.getLogger(__name__)

bp = Blueprint("sso", __name__)
CLIENT = "oidc"
# Seconds for any one call to the provider (discovery, JWKS, token): a hung provider must not hold a thread.
PROVIDER_TIMEOUT = 10.0
MAX_EMAIL_CHARS = 254


def register_sso(app: Flask) -> None:
    """Mount /api/auth/oidc on app with an OpenID Connect client of OIDC_ISSUER (call it only when that is set)."""
    if not app.config["OIDC_CLIENT_ID"] or not app.config["OIDC_CLIENT_SECRET"]:
        raise ValueError("OIDC_ISSUER is set: set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET too")
    oauth = OAuth(app)
    oauth.register(
        CLIENT,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=app.config["OIDC_ISSUER"].rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256",
                       "default_timeout": PROVIDER_TIMEOUT},
    )
    app.extensions["sso"] = oauth
    app.register_blueprint(bp, url_prefix="/api/auth/oidc")


def client() -> Any:
    """This app's OpenID Connect client (Authlib's FlaskOAuth2App)."""
    return current_app.extensions["sso"].create_client(CLIENT)


def provider_unavailable(exc: Exception) -> APIError:
    """The error for a provider that did not answer, or answered nonsense."""
    log.warning("[SSO] the identity provider did not answer properly: %s", type(exc).__name__)
    return APIError(503, "sso_unavailable", f"{current_app.config['OIDC_NAME']} did not answer; try again shortly",
                    headers={"Retry-After": "30"})


@bp.get("/login")
def login() -> ResponseReturnValue:
    """Send the browser to the identity provider (state, nonce and PKCE kept in the session cookie)."""
    try:
        return client().authorize_redirect(url_for("sso.callback", _external=True))
    except (requests.RequestException, ValueError) as exc:
        raise provider_unavailable(exc) from exc


@bp.get("/callback")
def callback() -> ResponseReturnValue:
    """Finish the sign-in the provider redirected back from: verify everything, then sign the email's owner in."""
    if "error" in request.args:  # the person refused, or the provider did
        raise APIError(401, "sso_refused", f"{current_app.config['OIDC_NAME']} did not sign you in: "
                       f"{request.args.get('error', '')[:100]}")
    claims = verified_claims()
    email, verified = claims.get("email"), claims.get("email_verified")
    if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL_CHARS:
        raise APIError(403, "sso_no_email", f"{current_app.config['OIDC_NAME']} did not share a usable email address")
    if verified is not True and verified != "true":  # a few providers send the string
        raise APIError(403, "sso_email_unverified",
                       f"{current_app.config['OIDC_NAME']} has not verified the email address {email}")
    name = claims.get("name")
    return sign_in_by_email(email, name if isinstance(name, str) else "")


def verified_claims() -> dict[str, Any]:
    """Exchange the callback's code and return the ID token's claims once state, signature, iss, aud and nonce hold."""
    oidc = client()
    config = current_app.config
    options = {"iss": {"essential": True, "values": [config["OIDC_ISSUER"]]},
               "aud": {"essential": True, "values": [config["OIDC_CLIENT_ID"]]}}
    try:
        token = oidc.authorize_access_token(claims_options=options)
        claims = token.get("userinfo")
        if claims is None:  # Authlib verifies an ID token only when there is one
            raise APIError(401, "sso_invalid_token", "the identity provider sent no ID token")
        if "email" not in claims:  # some providers put it only in the UserInfo endpoint's answer
            extra = oidc.userinfo(token=token)
            if extra.get("sub") == claims["sub"]:
                claims = {**extra, **claims}
    except MismatchingStateError as exc:
        raise APIError(400, "sso_state_mismatch", "this sign-in was not started here, or it expired; "
                       "start again from the sign-in page") from exc
    except OAuthError as exc:  # the token endpoint refused the code (used, expired, for another client)
        raise APIError(400, "sso_failed", f"the identity provider refused the sign-in: {exc.error}") from exc
    except (AuthlibBaseError, JoseError) as exc:  # signature, issuer, audience, nonce or expiry
        log.warning("[SSO] an ID token was refused: %s", exc)
        raise APIError(401, "sso_invalid_token", "the identity provider's ID token did not verify") from exc
    except (requests.RequestException, ValueError) as exc:
        raise provider_unavailable(exc) from exc
    return dict(claims)


def sign_in_by_email(email: str, name: str) -> ResponseReturnValue:
    """Sign in the owner of a verified email (accounts decide who: its user, or a member of the domain's organisation)."""
    user = accounts.sign_in_verified_email(email, name.strip()[:120])
    new = accounts.create_session(user.id)
    return accounts.set_session_cookie(redirect("/"), new.secret)
