"""Sign-up, sign-in and sessions under /api/auth."""
from __future__ import annotations

import logging
import threading

from flask import Flask, Response, current_app
from sqlalchemy import select

from luca.accounts import bp, endpoint, service
from luca.accounts.schemas import (
    AcceptInvitation,
    AccountOut,
    ForgotRequest,
    LoginRequest,
    PasswordChange,
    ResetRequest,
    SessionInfo,
    SessionList,
    SessionOut,
    SignupRequest,
)
from luca.auth import CurrentUser, current_user, session_secret
from luca.errors import APIError, not_found
from luca.extensions import db
from luca.models import User, UserSession, utcnow

log = logging.getLogger(__name__)


def session_answer(user: CurrentUser, csrf_token: str | None, status: int = 200) -> Response:
    """{"user", "csrf_token"} as JSON."""
    body = SessionOut(user=AccountOut.model_validate(user), csrf_token=csrf_token)
    return Response(body.model_dump_json(), status=status, mimetype="application/json")


def signed_in(user_id: int, status: int = 200) -> Response:
    """Start a session for the user and answer with it, setting the cookie."""
    new = service.create_session(user_id)
    response = session_answer(service.account_user(user_id), new.session.csrf_token, status)
    return service.set_session_cookie(response, new.secret)


@bp.post("/auth/signup")
@endpoint(body=SignupRequest, response=SessionOut, status=201, errors=(403, 409), public=True)
def signup(body: SignupRequest) -> Response:
    """Create an account and the organisation it owns, and sign in (only with SIGNUP=open)."""
    if current_app.config["SIGNUP"] != "open":
        raise APIError(403, "signup_closed", "sign-up is by invitation on this server; ask your organisation's admin")
    service.check_password_rules(body.password)
    user = service.create_account(body.email, body.name, password=body.password)
    db.session.commit()
    return signed_in(user.id, 201)


@bp.post("/auth/login")
@endpoint(body=LoginRequest, response=SessionOut, public=True)
def login(body: LoginRequest) -> Response:
    """Sign in with email and password: sets the session cookie and answers the CSRF token for writes."""
    return signed_in(service.check_login(body.email, body.password).id)


@bp.get("/auth/session")
@endpoint(response=SessionOut)
def get_session() -> Response:
    """The signed-in user and the session's CSRF token (null for an API token)."""
    user = current_user()
    return session_answer(user, user.csrf_token)


@bp.post("/auth/logout")
@endpoint(status=204, errors=(403,))
def logout() -> Response:
    """End this session and drop its cookie (with an API token: nothing to end)."""
    user = current_user()
    if user.session_id is not None:
        service.end_sessions(user.id, only=user.session_id)
    response = Response(status=204)
    return service.clear_session_cookie(response) if session_secret() else response


@bp.get("/auth/sessions")
@endpoint(response=SessionList)
def list_sessions() -> SessionList:
    """The user's live sessions, newest first."""
    user = current_user()
    rows = db.session.execute(select(UserSession).where(
        UserSession.user_id == user.id, UserSession.revoked_at.is_(None), UserSession.expires_at > utcnow())
        .order_by(UserSession.id.desc())).scalars()
    return SessionList(items=[SessionInfo.model_validate(row).model_copy(update={"current": row.id == user.session_id})
                              for row in rows])


@bp.delete("/auth/sessions/<int:session_id>")
@endpoint(status=204, errors=(403,))
def delete_session(session_id: int) -> tuple[str, int]:
    """End one of the user's sessions (signs that browser out at once)."""
    if service.end_sessions(current_user().id, only=service.existing_id(session_id, "session")) == 0:
        raise not_found("session")
    return "", 204


@bp.post("/auth/password")
@endpoint(body=PasswordChange, status=204, errors=(403,))
def change_password(body: PasswordChange) -> tuple[str, int]:
    """Change the password; every other session ends."""
    user = current_user()
    stored = db.session.execute(select(User.password_hash).where(User.id == user.id)).scalar_one()
    if not service.verify_password(stored, body.current):
        raise APIError(403, "wrong_password", "the current password is wrong")
    service.set_password(user.id, service.check_password_rules(body.new, "new"), keep_session=user.session_id)
    return "", 204


@bp.post("/auth/forgot")
@endpoint(body=ForgotRequest, status=202, public=True)
def forgot_password(body: ForgotRequest) -> tuple[str, int]:
    """Mail a reset link when MAIL_URL is set and the account exists; the answer is the same either way."""
    user = service.find_user(body.email)
    if user is not None and user.membership is not None and current_app.config["MAIL_URL"]:
        link = service.create_reset_link(user)
        # Sent after the answer, on a thread: its time must not tell who has an account.
        threading.Thread(target=mail_reset_link, args=(current_app._get_current_object(), user.email, link),
                         daemon=True).start()
    return "", 202


def mail_reset_link(app: Flask, email: str, link: str) -> None:
    """Mail a reset link (on its own thread); a failure is logged, never raised."""
    with app.app_context():
        try:
            service.send_mail(email, "Reset your Luca password",
                              f"Open this link within an hour to choose a new password:\n\n{link}\n\n"
                              "If you did not ask for it, ignore this mail.")
        except OSError as exc:  # smtplib's errors are OSErrors
            log.warning("reset mail not sent: %s", type(exc).__name__)


@bp.post("/auth/reset")
@endpoint(body=ResetRequest, status=204, errors=(400,), public=True)
def reset_password(body: ResetRequest) -> tuple[str, int]:
    """Choose a new password with a reset link's token (once, within the hour); every session ends."""
    service.use_reset_link(body.token, service.check_password_rules(body.password))
    return "", 204


@bp.post("/auth/accept-invitation")
@endpoint(body=AcceptInvitation, response=SessionOut, status=201, errors=(400, 409), public=True)
def accept_invitation(body: AcceptInvitation) -> Response:
    """Join the inviting organisation with a name and password, and sign in."""
    service.check_password_rules(body.password)
    return signed_in(service.accept_invitation(body.token, body.name, body.password).id, 201)
