"""Accounts: passwords (argon2id), organisations and roles, sessions, reset links, invitations, login throttling.

Seams for single sign-on: sign_in_verified_email() finds or creates the user of a verified email
address, and create_session() + set_session_cookie() sign them in, exactly as a password does.
"""
from __future__ import annotations

import logging
import math
import secrets
import smtplib
import time
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, TypeVar
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, Response, current_app, has_request_context, request
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from luca.auth import CurrentUser, current_user, forget_sessions, forget_tokens, forget_user, hash_token
from luca.errors import APIError, not_found
from luca.extensions import db, limits
from luca.limits import client_address, limited_message
from luca.models import ApiToken, Invitation, Membership, Organisation, PasswordReset, User, UserSession, utcnow

L = TypeVar("L", PasswordReset, Invitation)

log = logging.getLogger(__name__)

hasher = PasswordHasher()  # argon2id, argon2-cffi's recommended parameters
ADMIN_ROLES = ("owner", "admin")
INVALID_LOGIN = "wrong email or password"
_dummy_hash: str | None = None


# Rows of users, api_tokens and user_sessions have 32-bit ids; a larger one names no row (and PostgreSQL
# would refuse to compare it with the column).
MAX_INT_ID = 2**31 - 1


def existing_id(value: int, what: str) -> int:
    """value, when a 32-bit id column can hold it; else the 404 of an unknown row."""
    if value > MAX_INT_ID:
        raise not_found(what)
    return value


# -- passwords ---------------------------------------------------------------------------
def check_password_rules(password: str, field: str = "password") -> str:
    """The password, when it is long enough; 422 naming the rule otherwise."""
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        raise APIError(422, "password_too_short", f"the password needs at least {minimum} characters",
                       [{"field": field, "message": f"at least {minimum} characters"}])
    return password


def hash_password(password: str) -> str:
    """The stored form of a password (argon2id)."""
    return hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether password matches; with nothing stored a dummy hash is checked, so both take the same time."""
    global _dummy_hash
    if stored is None:
        if _dummy_hash is None:
            _dummy_hash = hasher.hash(secrets.token_urlsafe(16))
        stored, password = _dummy_hash, password + "\x00never"
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def normalise_email(email: str) -> str:
    """An email address as stored: trimmed, lower case."""
    return email.strip().lower()


def find_user(email: str) -> User | None:
    """The user with this email (case-insensitive), if any."""
    return db.session.execute(select(User).where(func.lower(User.email) == normalise_email(email))
                              ).scalar_one_or_none()


# -- users and organisations ----------------------------------------------------------------
def create_account(email: str, name: str, *, password: str | None = None, organisation: Organisation | None = None,
                   role: str = "owner", is_admin: bool = False) -> User:
    """A new user in organisation (a new one they own when None); 409 when the email is taken. Not committed."""
    email = normalise_email(email)
    if find_user(email) is not None:
        raise APIError(409, "email_taken", "an account with this email already exists")
    if organisation is None:
        organisation = Organisation(name=(name or email)[:120])
        db.session.add(organisation)
        role = "owner"
    user = User(email=email, name=name, is_admin=is_admin,
                password_hash=hash_password(password) if password is not None else None)
    user.membership = Membership(organisation=organisation, role=role)
    db.session.add(user)
    return user


def sign_in_verified_email(email: str, name: str = "") -> User:
    """The user of an email address an identity provider has verified, created on first sign-in.

    A known email signs in its user. An unknown one becomes a member of the organisation that claims
    the email's domain (organisations.domain, set by an operator); with SIGNUP=open and no such
    organisation, the user gets a new organisation of their own; otherwise 403. Committed.
    """
    user = find_user(email)
    if user is not None:
        return user
    domain = normalise_email(email).rpartition("@")[2]
    organisation = db.session.execute(select(Organisation).where(Organisation.domain == domain)).scalar_one_or_none()
    if organisation is None and current_app.config["SIGNUP"] != "open":
        raise APIError(403, "signup_closed", "no organisation on this server takes sign-ins from this domain")
    try:
        user = create_account(email, name, organisation=organisation, role="member")
        db.session.commit()
    except IntegrityError:  # the same person's first sign-in in another tab won the race
        db.session.rollback()
        user = find_user(email)
        if user is None:
            raise
    return user


def account_user(user_id: int) -> CurrentUser:
    """A user as a request sees them (for answers right after signing in)."""
    user, membership = db.session.execute(
        select(User, Membership).outerjoin(Membership, Membership.user_id == User.id).where(User.id == user_id)).one()
    return CurrentUser(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin,
                       created_at=user.created_at, token_id=None,
                       organisation_id=membership.organisation_id if membership else None,
                       role=membership.role if membership else "member")


def require_role(*roles: str) -> CurrentUser:
    """The signed-in user when their organisation role is one of roles (and a token has the admin scope); else 403."""
    user = current_user()
    if user.organisation_id is None or user.role not in roles:
        raise APIError(403, "forbidden", f"this needs the {' or '.join(roles)} role in your organisation")
    if "admin" not in user.scopes:
        raise APIError(403, "insufficient_scope", "this API token lacks the admin scope")
    return user


# -- sessions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewSession:
    """A session just created: the cookie's secret (shown once) and its row."""

    secret: str
    session: UserSession


def create_session(user_id: int) -> NewSession:
    """Start a server-side session for a user (committed); put its secret in the cookie with set_session_cookie()."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    session = UserSession(
        user_id=user_id, token_hash=hash_token(secret), csrf_token=secrets.token_urlsafe(32),
        user_agent=(request.user_agent.string or "")[:200] if has_request_context() else "",
        address=client_address()[:64] if has_request_context() else "", created_at=now, last_used_at=now,
        expires_at=now + timedelta(hours=current_app.config["SESSION_LIFETIME_HOURS"]))
    db.session.add(session)
    db.session.commit()
    return NewSession(secret, session)


def set_session_cookie(response: Response, secret: str) -> Response:
    """The session cookie: HttpOnly, SameSite=Lax, Secure when the request came over HTTPS."""
    response.set_cookie(current_app.config["SESSION_COOKIE"], secret, httponly=True, samesite="Lax",
                        secure=request.is_secure, path="/",
                        max_age=current_app.config["SESSION_LIFETIME_HOURS"] * 3600)
    return response


def clear_session_cookie(response: Response) -> Response:
    """Tell the browser to drop the session cookie."""
    response.delete_cookie(current_app.config["SESSION_COOKIE"], path="/", httponly=True, samesite="Lax",
                           secure=request.is_secure)
    return response


def end_sessions(user_id: int, *, only: int | None = None, keep: int | None = None) -> int:
    """Revoke a user's live sessions (only one of them, or all but one), committed and forgotten by the cache."""
    where = [UserSession.user_id == user_id, UserSession.revoked_at.is_(None)]
    if only is not None:
        where.append(UserSession.id == only)
    if keep is not None:
        where.append(UserSession.id != keep)
    hashes = db.session.execute(select(UserSession.token_hash).where(*where)).scalars().all()
    if hashes:
        db.session.execute(update(UserSession).where(*where).values(revoked_at=utcnow()))
    db.session.commit()
    forget_sessions(list(hashes))
    return len(hashes)


def revoke_tokens(user_id: int) -> None:
    """Revoke every API token of a user (committed, forgotten by the cache)."""
    hashes = db.session.execute(select(ApiToken.token_hash).where(ApiToken.user_id == user_id,
                                                                   ApiToken.revoked_at.is_(None))).scalars().all()
    db.session.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
    db.session.commit()
    forget_tokens(list(hashes))


def set_password(user_id: int, password: str, *, keep_session: int | None = None) -> None:
    """Store a new password and end every other session of the user."""
    db.session.execute(update(User).where(User.id == user_id).values(password_hash=hash_password(password)))
    db.session.commit()
    end_sessions(user_id, keep=keep_session)


# -- links: password resets and invitations ----------------------------------------------------
def public_url(path: str) -> str:
    """An absolute link: under PUBLIC_URL, else the address the request came to (localhost outside requests)."""
    base = current_app.config["PUBLIC_URL"] or (request.host_url if has_request_context() else "http://localhost:5000/")
    return base.rstrip("/") + path


def create_reset_link(user: User) -> str:
    """A one-time password reset link for user, valid RESET_LIFETIME_MINUTES (committed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(PasswordReset(user_id=user.id, token_hash=hash_token(token), created_at=now,
                                 expires_at=now + timedelta(minutes=current_app.config["RESET_LIFETIME_MINUTES"])))
    db.session.commit()
    return public_url(f"/reset-password?token={token}")


def claim_link(kind: type[L], used: Any, token: str, what: str) -> L:
    """The one-time link's row, claimed (its `used` column set) in the caller's transaction; 400 when the
    token is unknown, used or expired. Claimed with one UPDATE, so two uses at once cannot both succeed."""
    now = utcnow()
    link = db.session.execute(select(kind).where(kind.token_hash == hash_token(token))).scalar_one_or_none()
    claimed = None
    if link is not None:
        claimed = db.session.execute(update(kind).where(kind.id == link.id, used.is_(None), kind.expires_at > now)
                                     .values({used.key: now}))
    if claimed is None or claimed.rowcount == 0:
        db.session.rollback()
        raise APIError(400, "invalid_token", f"{what} is unknown, used or expired")
    return link


def use_reset_link(token: str, password: str) -> None:
    """Set a new password with a reset token, once and before it expires; ends every session. 400 otherwise."""
    reset = claim_link(PasswordReset, PasswordReset.used_at, token, "the reset link")
    set_password(reset.user_id, password)


def send_mail(to: str, subject: str, text: str) -> None:
    """Send a plain-text mail through MAIL_URL (smtp://user:password@host:port, smtps:// for TLS)."""
    url = urlsplit(current_app.config["MAIL_URL"])
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = current_app.config["MAIL_FROM"], to, subject
    message.set_content(text)
    smtp_class = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
    with smtp_class(url.hostname or "localhost", url.port or (465 if url.scheme == "smtps" else 25), timeout=10) as smtp:
        if url.scheme == "smtp+starttls":
            smtp.starttls()
        if url.username:
            smtp.login(url.username, url.password or "")
        smtp.send_message(message)


def create_invitation(organisation_id: int, email: str, role: str, invited_by: int) -> tuple[str, str, Invitation]:
    """A one-time invitation into the organisation, valid INVITATION_LIFETIME_HOURS: (url, token, row), committed."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    invitation = Invitation(organisation_id=organisation_id, email=normalise_email(email), role=role,
                            token_hash=hash_token(token), invited_by=invited_by, created_at=now,
                            expires_at=now + timedelta(hours=current_app.config["INVITATION_LIFETIME_HOURS"]))
    db.session.add(invitation)
    db.session.commit()
    return public_url(f"/accept-invitation?token={token}"), token, invitation


def accept_invitation(token: str, name: str, password: str) -> User:
    """Create the invited member (once, before the invitation expires); 400 for a bad token, 409 for a taken email."""
    invitation = claim_link(Invitation, Invitation.accepted_at, token, "the invitation")
    organisation = db.session.get(Organisation, invitation.organisation_id)
    user = create_account(invitation.email, name, password=password, organisation=organisation, role=invitation.role)
    db.session.commit()  # the claim and the member together: a failure above leaves the invitation unused
    return user


def remove_member(user_id: int) -> None:
    """Take a user out of their organisation: membership gone, password cleared, sessions and tokens ended."""
    db.session.execute(update(User).where(User.id == user_id).values(password_hash=None))
    db.session.execute(Membership.__table__.delete().where(Membership.user_id == user_id))
    db.session.commit()
    end_sessions(user_id)
    revoke_tokens(user_id)
    forget_user(user_id)


# -- login throttling -----------------------------------------------------------------------
class LoginThrottle:
    """Failed sign-ins counted per account and per (account, address), on the rate limiter's storage.

    The address's own budget is the failed-authentication budget of luca.limits. An address that
    used it up is refused (429) before any password is checked. An account that used up
    RATE_LIMIT_LOGIN_FAILURES refuses only the addresses that failed on it: the right password
    from an address that has not been failing still signs in, so nobody can lock a colleague out.
    """

    SCOPE = "login-failures"

    def __init__(self, app: Flask) -> None:
        limiter = limits.of(app).limiter
        self.setting = app.config["RATE_LIMIT_LOGIN_FAILURES"]
        self.items = parse_many(self.setting)
        self.address_setting = app.config["RATE_LIMIT_AUTH_FAILURES"]
        self.address_items = parse_many(self.address_setting)
        self.strategies = []
        if limiter.enabled:
            self.strategies.append(FixedWindowRateLimiter(limiter.storage))
            if not isinstance(limiter.storage, MemoryStorage):
                self.strategies.append(FixedWindowRateLimiter(MemoryStorage()))  # when Redis fails

    def _first_working(self, operation):  # noqa: ANN001, ANN202
        for strategy in self.strategies:
            try:
                return operation(strategy)
            except Exception as exc:  # noqa: BLE001 - a storage failure: count in memory, never a 500
                log.warning("login throttle: %s failed (%s)", type(strategy.storage).__name__, type(exc).__name__)
        return None

    @staticmethod
    def _wait(strategy: FixedWindowRateLimiter, items: list, key: str, scope: str) -> int | None:  # type: ignore[type-arg]
        waits = [max(1, math.ceil(strategy.get_window_stats(item, key, scope).reset_time - time.time()))
                 for item in items if not strategy.test(item, key, scope)]
        return max(waits) if waits else None

    def refusal(self, email: str, address: str) -> APIError | None:
        """The 429 for this attempt, before any password is checked, or None when it may try."""

        def check(strategy: FixedWindowRateLimiter) -> APIError | None:
            wait = self._wait(strategy, self.address_items, address, "auth-failures")
            if wait is not None:
                return self._limited("too many failed sign-ins from this address", self.address_setting, wait)
            account_wait = self._wait(strategy, self.items, email, self.SCOPE)
            if account_wait is not None and strategy.get_window_stats(self.items[0], f"{email}|{address}",
                                                                      self.SCOPE).remaining < self.items[0].amount:
                return self._limited("too many failed sign-ins for this account from this address", self.setting,
                                     account_wait)
            return None

        return self._first_working(check)

    def failed(self, email: str, address: str) -> APIError | None:
        """Count a failed sign-in; the 429 to answer when a budget is now used up, else None."""

        def spend(strategy: FixedWindowRateLimiter) -> APIError | None:
            over_address = [item for item in self.address_items
                            if not strategy.hit(item, address, "auth-failures")]
            over_account = [item for item in self.items if not strategy.hit(item, email, self.SCOPE)]
            strategy.hit(self.items[0], f"{email}|{address}", self.SCOPE)
            if over_address:
                return self._limited("too many failed sign-ins from this address", self.address_setting,
                                     self._wait(strategy, self.address_items, address, "auth-failures") or 1)
            if over_account:
                return self._limited("too many failed sign-ins for this account", self.setting,
                                     self._wait(strategy, self.items, email, self.SCOPE) or 1)
            return None

        return self._first_working(spend)

    @staticmethod
    def _limited(message: str, setting: str, wait: int) -> APIError:
        return APIError(429, "rate_limited", limited_message(message, setting, wait), headers={"Retry-After": str(wait)})


def login_throttle() -> LoginThrottle:
    """The current app's login throttle (made on first use)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    throttle = app.extensions.get("luca:login-throttle")
    if throttle is None:
        throttle = app.extensions["luca:login-throttle"] = LoginThrottle(app)
    return throttle


def check_login(email: str, password: str) -> User:
    """The user whose email and password these are; 401 alike for an unknown email and a wrong password, 429 when throttled."""
    email, address = normalise_email(email), client_address()
    throttle = login_throttle()
    refusal = throttle.refusal(email, address)
    if refusal is not None:
        raise refusal
    user = find_user(email)
    ok = verify_password(user.password_hash if user is not None else None, password)
    if user is None or not ok or user.membership is None:
        raise throttle.failed(email, address) or APIError(401, "invalid_credentials", INVALID_LOGIN)
    if hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = hash_password(password)
        db.session.commit()
    return user
