"""Personal API tokens under /api/tokens: scoped, optionally expiring, the secret shown once."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from luca.accounts import bp, endpoint
from luca.accounts.service import existing_id
from luca.accounts.schemas import TokenCreate, TokenCreated, TokenList, TokenOut
from luca.auth import SCOPES, current_user, forget_tokens, issue_token
from luca.errors import APIError, not_found
from luca.extensions import db
from luca.models import ApiToken, User, utcnow


def token_out(row: ApiToken) -> TokenOut:
    """A token row as listed."""
    return TokenOut(id=row.id, name=row.name, prefix=row.prefix, scopes=[s for s in row.scopes.split(",") if s],
                    created_at=row.created_at, expires_at=row.expires_at, last_used_at=row.last_used_at)


@bp.get("/tokens")
@endpoint(response=TokenList)
def list_tokens() -> TokenList:
    """The user's live tokens, oldest first (never their secrets)."""
    rows = db.session.execute(select(ApiToken).where(ApiToken.user_id == current_user().id,
                                                     ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)).scalars()
    return TokenList(items=[token_out(row) for row in rows])


@bp.post("/tokens")
@endpoint(body=TokenCreate, response=TokenCreated, status=201, errors=(403,))
def create_token(body: TokenCreate) -> TokenCreated:
    """Make a personal token; the answer's `token` is its secret, shown this once."""
    user = current_user()
    wanted = [scope for scope in SCOPES if scope in body.scopes]
    if any(scope not in user.scopes for scope in wanted):  # a token cannot mint more than it may do
        raise APIError(403, "insufficient_scope", "a token can only make tokens with scopes it has itself")
    expires_at = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    secret, row = issue_token(db.session.get(User, user.id), name=body.name, scopes=",".join(wanted),
                              expires_at=expires_at)
    db.session.commit()
    return TokenCreated(id=row.id, name=row.name, scopes=wanted, expires_at=row.expires_at, token=secret)


@bp.delete("/tokens/<int:token_id>")
@endpoint(status=204, errors=(403,))
def revoke_token(token_id: int) -> tuple[str, int]:
    """Revoke one of the user's tokens (at once here, in other processes within CACHE_NEAR_TTL)."""
    where = (ApiToken.id == existing_id(token_id, "token"), ApiToken.user_id == current_user().id,
             ApiToken.revoked_at.is_(None))
    token_hash = db.session.execute(select(ApiToken.token_hash).where(*where)).scalar_one_or_none()
    if token_hash is None:
        raise not_found("token")
    db.session.execute(update(ApiToken).where(*where).values(revoked_at=utcnow()))
    db.session.commit()
    forget_tokens([token_hash])
    return "", 204
