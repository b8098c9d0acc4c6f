"""Who a request is: a bearer API token, or a session cookie (with its CSRF token for writes).

Both secrets are random, shown once, and stored only as SHA-256 hashes. A token has scopes
(read, write, admin); a session has all three. The resolved user is cached per secret (a plain
value); revoking a token, a session or a membership forgets those entries (forget_user).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from flask import g, request
from sqlalchemy import select, update

from luca.cache import cache_key
from luca.errors import APIError
from luca.extensions import cache, db
from luca.limits import refuse_credentials
from luca.models import ApiToken, Membership, User, UserSession, utcnow

TOKEN_PREFIX = "luca_"
SCOPES = ("read", "write", "admin")
ALL_SCOPES = ",".join(SCOPES)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
# last_used_at is written at most this often per token or session, so reads stay reads.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class CurrentUser:
    """The authenticated user of a request (a plain value, safe to cache)."""

    id: int
    email: str
    name: str
    is_admin: bool
    created_at: datetime
    token_id: int | None
    organisation_id: int | None = None
    role: str = "member"
    scopes: tuple[str, ...] = SCOPES
    expires_at: datetime | None = None
    session_id: int | None = None
    csrf_token: str | None = None


def hash_token(token: str) -> str:
    """The stored form of a token or session secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: User, name: str = "", scopes: str = ALL_SCOPES, expires_at: datetime | None = None
                ) -> tuple[str, ApiToken]:
    """Create a token for user, add it to the session, and return its only plaintext copy and its row."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, token_hash=hash_token(token), prefix=token[:12], name=name, scopes=scopes,
                   expires_at=expires_at)
    db.session.add(row)
    return token, row


def bearer_token() -> str | None:
    """The token in the Authorization header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_cache_key(token_hash: str) -> str:
    """Where a token's user is cached."""
    return cache_key("auth", token_hash)


def session_cache_key(token_hash: str) -> str:
    """Where a session's user is cached."""
    return cache_key("session", token_hash)


def _user_fields(user: User, membership: tuple[int, str] | None) -> dict[str, object]:
    org_id, role = membership or (None, "member")
    return {"id": user.id, "email": user.email, "name": user.name, "is_admin": user.is_admin,
            "created_at": user.created_at, "organisation_id": org_id, "role": role}


def lookup_credential(kind: type[ApiToken] | type[UserSession], key: str, token_hash: str) -> CurrentUser | None:
    """A token's or session's user: from the cache, else one query (which notes its use at most once a minute).

    Read on every request: a copy in this process saves a Redis round trip (a credential revoked
    elsewhere stops working here within CACHE_NEAR_TTL seconds; here, at once).
    """
    cached = cache.get(key, near=True)
    if cached is not None:
        return CurrentUser(**cached)
    detail = ApiToken.scopes if kind is ApiToken else UserSession.csrf_token
    row = db.session.execute(
        select(kind.id, kind.last_used_at, kind.expires_at, detail, User, Membership.organisation_id, Membership.role)
        .join(User, User.id == kind.user_id)
        .outerjoin(Membership, Membership.user_id == User.id)
        .where(kind.token_hash == token_hash, kind.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    credential_id, last_used_at, expires_at, value, user, org_id, role = row
    if not touch(kind, credential_id, last_used_at):
        return None
    own = ({"token_id": credential_id, "scopes": tuple(s for s in value.split(",") if s)} if kind is ApiToken
           else {"token_id": None, "session_id": credential_id, "csrf_token": value})
    found = CurrentUser(**_user_fields(user, (org_id, role) if org_id else None), expires_at=expires_at, **own)
    cache.set(key, asdict(found), near=True)
    return found


def lookup_token(token: str) -> CurrentUser | None:
    """The token's user (see lookup_credential); None when unknown or revoked."""
    token_hash = hash_token(token)
    return lookup_credential(ApiToken, token_cache_key(token_hash), token_hash)


def lookup_session(secret: str) -> CurrentUser | None:
    """The session's user, cached like a token's; None when unknown, revoked or expired."""
    token_hash = hash_token(secret)
    found = lookup_credential(UserSession, session_cache_key(token_hash), token_hash)
    return None if found is None or (found.expires_at is not None and found.expires_at <= utcnow()) else found


def touch(model: type[ApiToken] | type[UserSession], row_id: int, last_used_at: datetime | None) -> bool:
    """Note a token's or session's use (at most once a minute); False when it was revoked meanwhile."""
    now = utcnow()
    if last_used_at is not None and now - last_used_at <= TOUCH_INTERVAL:
        return True
    touched = db.session.execute(update(model).where(model.id == row_id, model.revoked_at.is_(None))
                                 .values(last_used_at=now))
    db.session.commit()
    return touched.rowcount != 0  # 0: revoked since the SELECT (the UPDATE waited for the revocation's lock)


def forget_tokens(token_hashes: list[str]) -> bool:
    """Drop tokens' cached users: here at once, in other processes within CACHE_NEAR_TTL.

    False when Redis is configured but did not answer: other processes may then go on
    accepting the tokens from Redis until their entries expire (CACHE_TTL).
    """
    return cache.delete(*(token_cache_key(h) for h in token_hashes))


def forget_sessions(token_hashes: list[str]) -> bool:
    """Drop sessions' cached users (as forget_tokens)."""
    return cache.delete(*(session_cache_key(h) for h in token_hashes))


def forget_user(user_id: int) -> bool:
    """Drop the cached copies of every token and session of a user (after a role change, removal or revocation)."""
    tokens = db.session.execute(select(ApiToken.token_hash).where(ApiToken.user_id == user_id)).scalars().all()
    sessions = db.session.execute(select(UserSession.token_hash).where(UserSession.user_id == user_id)
                                  ).scalars().all()
    return forget_tokens(list(tokens)) & forget_sessions(list(sessions))


def unauthorized(message: str) -> APIError:
    """A 401 that tells the client how to authenticate."""
    return APIError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="luca"'})


def session_secret() -> str | None:
    """The session cookie's secret, if the request carries one."""
    from flask import current_app

    value = request.cookies.get(current_app.config["SESSION_COOKIE"], "").strip()
    return value or None


def authenticate(scope: str | None = None) -> CurrentUser:
    """Resolve the request's bearer token or session cookie to a user and keep it in g.user.

    401 without valid credentials (an expired token included); 403 when a token lacks the scope
    (read for GET, write for other methods, unless scope says otherwise) or a cookie-authenticated
    write lacks the session's X-CSRF-Token.
    """
    token = bearer_token()
    if token is not None:
        user = lookup_token(token)
        if user is None:
            refuse_credentials(unauthorized("the API token is not valid or was revoked"))
        if user.expires_at is not None and user.expires_at <= utcnow():
            raise unauthorized("the API token has expired")
    else:
        secret = session_secret()
        if secret is None:
            raise unauthorized("sign in, or send an API token as 'Authorization: Bearer <token>'")
        user = lookup_session(secret)
        if user is None:
            raise unauthorized("the session has ended; sign in again")
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, ""), user.csrf_token or ""):
            raise APIError(403, "csrf_failed", f"a signed-in browser's {request.method} needs the {CSRF_HEADER} "
                                               "header that the session handed out")
    needed = scope or ("read" if request.method in SAFE_METHODS else "write")
    if needed not in user.scopes:
        raise APIError(403, "insufficient_scope", f"this API token lacks the {needed} scope")
    g.user = user
    return user


def require_user() -> None:
    """before_request hook: every endpoint of the blueprint needs a signed-in user."""
    authenticate()


def require_admin() -> None:
    """before_request hook: every endpoint of the blueprint needs a platform operator (and a token's admin scope)."""
    if not authenticate(scope="admin").is_admin:
        raise APIError(403, "forbidden", "this endpoint is for administrators")


def current_user() -> CurrentUser:
    """The signed-in user of this request."""
    return g.user
