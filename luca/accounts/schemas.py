"""Request and response models of the accounts API (kept here, beside the routes that use them)."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from luca.schemas import Body, Money, Out, UTCDateTime, UserOut

Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, Field(min_length=1, max_length=1024)]  # the length rule is checked with its own message
Name = Annotated[str, Field(max_length=120)]
Role = Literal["owner", "admin", "member"]
Scope = Literal["read", "write", "admin"]
# A monthly budget as set: exact, 0 (nothing may be spent) up to what the money columns hold.
BudgetAmount = Annotated[Decimal, Field(ge=0, lt=Decimal("1e8"), max_digits=18, decimal_places=10,
                                        description="USD per UTC calendar month, 0 to 99,999,999.9999999999, "
                                                    "a number or a decimal string; null removes the budget")]


class SignupRequest(Body):
    """A new account and the organisation it owns (SIGNUP=open only)."""

    email: Email
    password: Password
    name: Name = ""


class LoginRequest(Body):
    """Email and password."""

    email: Annotated[str, Field(max_length=254)]
    password: Annotated[str, Field(max_length=1024)]


class AccountOut(UserOut):
    """The signed-in user with their organisation and role."""

    organisation_id: int | None
    role: Role


class SessionOut(BaseModel):
    """The signed-in user and the token every cookie-authenticated write must send as X-CSRF-Token."""

    user: AccountOut
    csrf_token: str | None = Field(description="null when authenticated by an API token")


class SessionInfo(Out):
    """One of the user's live sessions."""

    id: int
    user_agent: str
    address: str
    created_at: UTCDateTime
    last_used_at: UTCDateTime | None
    expires_at: UTCDateTime
    current: bool = False


class SessionList(BaseModel):
    """The user's live sessions, newest first."""

    items: list[SessionInfo]


class PasswordChange(Body):
    """The current password and the new one (other sessions end)."""

    current: Annotated[str, Field(max_length=1024)]
    new: Password


class ForgotRequest(Body):
    """Ask for a reset link by mail."""

    email: Annotated[str, Field(max_length=254)]


class ResetRequest(Body):
    """Set a new password with a reset link's token."""

    token: Annotated[str, Field(min_length=1, max_length=200)]
    password: Password


class AcceptInvitation(Body):
    """Join an organisation with an invitation's token."""

    token: Annotated[str, Field(min_length=1, max_length=200)]
    name: Name = ""
    password: Password


class TokenCreate(Body):
    """A personal API token: its scopes, and optionally the days until it expires."""

    name: Annotated[str, Field(max_length=80)] = ""
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)] = ["read", "write"]
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenOut(Out):
    """A token as listed (never its secret)."""

    id: int
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: UTCDateTime
    expires_at: UTCDateTime | None
    last_used_at: UTCDateTime | None


class TokenList(BaseModel):
    """The user's live tokens, oldest first."""

    items: list[TokenOut]


class TokenCreated(BaseModel):
    """A new token; `token` is its secret, shown this once."""

    id: int
    name: str
    scopes: list[Scope]
    expires_at: UTCDateTime | None
    token: str


class OrganisationOut(Out):
    """The signed-in user's organisation."""

    id: int
    name: str
    domain: str | None
    created_at: UTCDateTime
    role: Role
    monthly_budget_usd: Money | None = Field(None, description="null: no organisation budget")
    month_spent_usd: Money = Field(description="what the members spent this UTC month (answers and titles)")


class OrganisationUpdate(Body):
    """Rename the organisation, or set its monthly budget (owners and admins); fields left out stay."""

    name: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    monthly_budget_usd: BudgetAmount | None = None


class MemberOut(BaseModel):
    """A member of the organisation."""

    id: int
    email: str
    name: str
    role: Role
    joined_at: UTCDateTime
    monthly_budget_usd: Money | None = Field(None, description="null: no member budget")


class MemberList(BaseModel):
    """The organisation's members, oldest first."""

    items: list[MemberOut]


class MemberUpdate(Body):
    """A member's new role or monthly budget (owners and admins); fields left out stay."""

    role: Role | None = None
    monthly_budget_usd: BudgetAmount | None = None


class InvitationCreate(Body):
    """Invite someone by email with a role."""

    email: Email
    role: Role = "member"


class InvitationOut(BaseModel):
    """The one-time invitation link (valid 7 days) and its token."""

    url: str
    token: str
    expires_at: UTCDateTime
