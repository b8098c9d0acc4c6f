"""Bearer-token authentication: tokens are random, shown once, stored only as SHA-256 hashes."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from flask import g, request
from sqlalchemy import select, update

from luca.cache import cache_key
from luca.errors import APIError
from luca.extensions import cache, db
from luca.limits import refuse_credentials
from luca.models import ApiToken, User, utcnow

TOKEN_PREFIX = "luca_"
# last_used_at is written at most this often per token, so reads stay reads.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class CurrentUser:
    """The authenticated user of a request (a plain value, safe to cache)."""

    id: int
    email: str
    name: str
    is_admin: bool
    created_at: datetime
    token_id: int


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: User, name: str = "") -> str:
    """Create a token for user, add it to the session, and return its only plaintext copy."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user=user, token_hash=hash_token(token), prefix=token[:12], name=name))
    return token


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


def lookup_token(token: str) -> CurrentUser | None:
    """The token's user: from the cache, else one query (which notes the token's use at most once a minute)."""
    token_hash = hash_token(token)
    # Read on every request: a copy in this process saves a Redis round trip (a token revoked
    # elsewhere stops working here within CACHE_NEAR_TTL seconds; here, at once).
    cached = cache.get(token_cache_key(token_hash), near=True)
    if cached is not None:
        return CurrentUser(**cached)
    row = db.session.execute(
        select(ApiToken.id, ApiToken.last_used_at, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    token_id, last_used_at, user = row
    now = utcnow()
    if last_used_at is None or now - last_used_at > TOUCH_INTERVAL:
        touched = db.session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                                     .values(last_used_at=now))
        db.session.commit()
        if touched.rowcount == 0:  # revoked since the SELECT (the UPDATE waited for the revocation's lock)
            return None
    found = CurrentUser(user.id, user.email, user.name, user.is_admin, user.created_at, token_id)
    cache.set(token_cache_key(token_hash), asdict(found), near=True)
    return found


def forget_tokens(token_hashes: list[str]) -> bool:
    """Drop tokens' cached users: here at once, in other processes within CACHE_NEAR_TTL.

    False when Redis is configured but did not answer: other processes may then go on
    accepting the tokens from Redis until their entries expire (CACHE_TTL).
    """
    return cache.delete(*(token_cache_key(h) for h in token_hashes))


def unauthorized(message: str) -> APIError:
    """A 401 that tells the client how to authenticate."""
    return APIError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="luca"'})


def authenticate() -> CurrentUser:
    """Resolve the request's bearer token to a user and keep it in g.user; 401 otherwise."""
    token = bearer_token()
    if token is None:
        raise unauthorized("send an API token as 'Authorization: Bearer <token>'")
    user = lookup_token(token)
    if user is None:
        refuse_credentials(unauthorized("the API token is not valid or was revoked"))
    g.user = user
    return user


def require_user() -> None:
    """before_request hook: every endpoint of the blueprint needs a signed-in user."""
    authenticate()


def require_admin() -> None:
    """before_request hook: every endpoint of the blueprint needs an admin."""
    if not authenticate().is_admin:
        raise APIError(403, "forbidden", "this endpoint is for administrators")


def current_user() -> CurrentUser:
    """The signed-in user of this request."""
    return g.user
