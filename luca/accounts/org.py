"""The signed-in user's organisation under /api/org: its name and budget, members, roles and budgets, invitations.

Usage (what the members spent) is GET /api/usage, luca/usage.py: one query for every scope.
"""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import select

from luca import budgets
from luca.accounts import bp, endpoint, service
from luca.accounts.schemas import (
    InvitationCreate,
    InvitationOut,
    MemberList,
    MemberOut,
    MemberUpdate,
    OrganisationOut,
    OrganisationUpdate,
)
from luca.auth import current_user, forget_user
from luca.errors import APIError, not_found
from luca.extensions import db
from luca.models import Membership, Organisation, User


def own_organisation() -> tuple[Organisation, str]:
    """The signed-in user's organisation and role; 404 for a user who belongs to none (removed)."""
    user = current_user()
    organisation = db.session.get(Organisation, user.organisation_id) if user.organisation_id else None
    if organisation is None:
        raise not_found("organisation")
    return organisation, user.role


def not_null(body: BaseModel, *fields: str) -> None:
    """422 naming the field when one of fields is sent as null (only a budget may be cleared with null)."""
    for name in fields:
        if name in body.model_fields_set and getattr(body, name) is None:
            raise APIError(422, "validation_error", "the request body is not valid",
                           [{"field": name, "message": "must not be null"}])


def organisation_out(organisation: Organisation, role: str) -> OrganisationOut:
    """The organisation with its monthly budget and this month's spend."""
    holder = ("org", organisation.id)
    return OrganisationOut(id=organisation.id, name=organisation.name, domain=organisation.domain,
                           created_at=organisation.created_at, role=role,
                           monthly_budget_usd=budgets.budgets_of([holder]).get(holder),
                           month_spent_usd=budgets.month_spend(holder))


@bp.get("/org")
@endpoint(response=OrganisationOut)
def get_organisation() -> OrganisationOut:
    """The user's organisation, their role in it, its monthly budget and this month's spend."""
    return organisation_out(*own_organisation())


@bp.patch("/org")
@endpoint(body=OrganisationUpdate, response=OrganisationOut, errors=(403,))
def update_organisation(body: OrganisationUpdate) -> OrganisationOut:
    """Rename the organisation or set its monthly budget (null removes it); owners and admins."""
    service.require_role(*service.ADMIN_ROLES)
    not_null(body, "name")
    organisation, role = own_organisation()
    if body.name is not None:
        organisation.name = body.name
    db.session.commit()
    if "monthly_budget_usd" in body.model_fields_set:
        budgets.set_budget(("org", organisation.id), body.monthly_budget_usd)
    return organisation_out(organisation, role)


def member_out(user: User, membership: Membership, budget: Decimal | None = None) -> MemberOut:
    """A member as listed, with their monthly budget."""
    return MemberOut(id=user.id, email=user.email, name=user.name, role=membership.role,
                     joined_at=membership.created_at, monthly_budget_usd=budget)


@bp.get("/org/members")
@endpoint(response=MemberList, errors=(403,))
def list_members() -> MemberList:
    """The organisation's members and their roles, oldest first (owners and admins)."""
    me = service.require_role(*service.ADMIN_ROLES)
    rows = db.session.execute(select(User, Membership).join(Membership, Membership.user_id == User.id)
                              .where(Membership.organisation_id == me.organisation_id).order_by(User.id)).all()
    found = budgets.budgets_of([("member", u.id) for u, _ in rows])
    return MemberList(items=[member_out(u, m, found.get(("member", u.id))) for u, m in rows])


def colleague(user_id: int, oneself: bool = False) -> Membership:
    """A member of the signed-in admin's organisation whom they may manage; 404 outside it, 403 for oneself (unless
    oneself) or (unless an owner) for an owner."""
    me = service.require_role(*service.ADMIN_ROLES)
    membership = db.session.execute(select(Membership).where(
        Membership.user_id == service.existing_id(user_id, "member"),
        Membership.organisation_id == me.organisation_id)).scalar_one_or_none()
    if membership is None:
        raise not_found("member")
    if user_id == me.id and not oneself:
        raise APIError(403, "forbidden", "you cannot change your own membership; ask another owner or admin")
    if membership.role == "owner" and me.role != "owner":
        raise APIError(403, "forbidden", "only an owner can change or remove an owner")
    return membership


@bp.patch("/org/members/<int:user_id>")
@endpoint(body=MemberUpdate, response=MemberOut, errors=(403,))
def update_member(user_id: int, body: MemberUpdate) -> MemberOut:
    """Give a member another role (only owners make owners) or a monthly budget (null removes it; an admin may set
    their own, which limits only them)."""
    not_null(body, "role")
    membership = colleague(user_id, oneself=body.role is None)
    if body.role is not None:
        if body.role == "owner" and current_user().role != "owner":
            raise APIError(403, "forbidden", "only an owner can make an owner")
        membership.role = body.role
        db.session.commit()
        forget_user(user_id)  # their cached role goes with their cached credentials
    holder = ("member", user_id)
    if "monthly_budget_usd" in body.model_fields_set:
        budgets.set_budget(holder, body.monthly_budget_usd)
    return member_out(db.session.get(User, user_id), membership, budgets.budgets_of([holder]).get(holder))


@bp.delete("/org/members/<int:user_id>")
@endpoint(status=204, errors=(403,))
def remove_member(user_id: int) -> tuple[str, int]:
    """Remove a member: their sessions and tokens end at once and they can no longer sign in."""
    colleague(user_id)
    service.remove_member(user_id)
    return "", 204


@bp.post("/org/invitations")
@endpoint(body=InvitationCreate, response=InvitationOut, status=201, errors=(403, 409))
def invite(body: InvitationCreate) -> InvitationOut:
    """Invite someone: a one-time link, valid 7 days, to hand over (only owners invite owners)."""
    me = service.require_role(*service.ADMIN_ROLES)
    if body.role == "owner" and me.role != "owner":
        raise APIError(403, "forbidden", "only an owner can invite an owner")
    if service.find_user(body.email) is not None:
        raise APIError(409, "email_taken", "an account with this email already exists")
    url, token, invitation = service.create_invitation(me.organisation_id, body.email, body.role, me.id)
    return InvitationOut(url=url, token=token, expires_at=invitation.expires_at)
