"""Operator endpoints under /api/admin."""
from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import select

from luca.admin import bp
from luca.api import endpoint
from luca.extensions import db
from luca.models import User
from luca.schemas import UserOut


class UserListQuery(BaseModel):
    """Query string of the user list."""

    limit: int = Field(100, ge=1, le=1000)


class UserList(BaseModel):
    """Users, oldest first."""

    items: list[UserOut]


@bp.get("/users")
@endpoint(query=UserListQuery, response=UserList, errors=(403, 422))
def list_users(query: UserListQuery) -> UserList:
    """Every user, oldest first (admins only)."""
    users = db.session.execute(select(User).order_by(User.id).limit(query.limit)).scalars()
    return UserList(items=[UserOut.model_validate(u) for u in users])
