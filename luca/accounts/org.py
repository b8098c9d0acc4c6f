"""The signed-in user's organisation under /api/org: its name, members and roles, invitations, usage."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, select

from luca.accounts import bp, endpoint, service
from luca.admin.routes import parse_day
from luca.accounts.schemas import (
    InvitationCreate,
    InvitationOut,
    MemberList,
    MemberOut,
    MemberUpdate,
    MemberUsage,
    OrganisationOut,
    OrganisationUpdate,
    UsageOut,
    UsageQuery,
)
from luca.auth import current_user, forget_user
from luca.errors import APIError, not_found
from luca.extensions import db
from luca.models import Membership, Message, Organisation, User, utcnow

USAGE_DEFAULT_DAYS = 30
USAGE_MAX_DAYS = 366


def own_organisation() -> tuple[Organisation, str]:
    """The signed-in user's organisation and role; 404 for a user who belongs to none (removed)."""
    user = current_user()
    organisation = db.session.get(Organisation, user.organisation_id) if user.organisation_id else None
    if organisation is None:
        raise not_found("organisation")
    return organisation, user.role


@bp.get("/org")
@endpoint(response=OrganisationOut)
def get_organisation() -> OrganisationOut:
    """The user's organisation and their role in it."""
    organisation, role = own_organisation()
    return OrganisationOut(id=organisation.id, name=organisation.name, domain=organisation.domain,
                           created_at=organisation.created_at, role=role)


@bp.patch("/org")
@endpoint(body=OrganisationUpdate, response=OrganisationOut, errors=(403,))
def update_organisation(body: OrganisationUpdate) -> OrganisationOut:
    """Rename the organisation (owners and admins)."""
    service.require_role(*service.ADMIN_ROLES)
    organisation, role = own_organisation()
    organisation.name = body.name
    db.session.commit()
    return OrganisationOut(id=organisation.id, name=organisation.name, domain=organisation.domain,
                           created_at=organisation.created_at, role=role)


@bp.get("/org/members")
@endpoint(response=MemberList, errors=(403,))
def list_members() -> MemberList:
    """The organisation's members and their roles, oldest first (owners and admins)."""
    me = service.require_role(*service.ADMIN_ROLES)
    rows = db.session.execute(select(User, Membership).join(Membership, Membership.user_id == User.id)
                              .where(Membership.organisation_id == me.organisation_id).order_by(User.id)).all()
    return MemberList(items=[MemberOut(id=u.id, email=u.email, name=u.name, role=m.role, joined_at=m.created_at)
                             for u, m in rows])


def colleague(user_id: int) -> Membership:
    """A member of the signed-in admin's organisation whom they may manage; 404 outside it, 403 for oneself or
    (unless an owner) for an owner."""
    me = service.require_role(*service.ADMIN_ROLES)
    membership = db.session.execute(select(Membership).where(
        Membership.user_id == service.existing_id(user_id, "member"),
        Membership.organisation_id == me.organisation_id)).scalar_one_or_none()
    if membership is None:
        raise not_found("member")
    if user_id == me.id:
        raise APIError(403, "forbidden", "you cannot change your own membership; ask another owner or admin")
    if membership.role == "owner" and me.role != "owner":
        raise APIError(403, "forbidden", "only an owner can change or remove an owner")
    return membership


@bp.patch("/org/members/<int:user_id>")
@endpoint(body=MemberUpdate, response=MemberOut, errors=(403,))
def update_member(user_id: int, body: MemberUpdate) -> MemberOut:
    """Give a member another role (only owners make owners)."""
    membership = colleague(user_id)
    if body.role == "owner" and current_user().role != "owner":
        raise APIError(403, "forbidden", "only an owner can make an owner")
    membership.role = body.role
    db.session.commit()
    forget_user(user_id)  # their cached role goes with their cached credentials
    user = db.session.get(User, user_id)
    return MemberOut(id=user.id, email=user.email, name=user.name, role=membership.role,
                     joined_at=membership.created_at)


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


@bp.get("/org/usage")
@endpoint(query=UsageQuery, response=UsageOut, errors=(403, 422))
def usage(query: UsageQuery) -> UsageOut:
    """Questions, answers and tokens per member over a range of days (owners and admins)."""
    me = service.require_role(*service.ADMIN_ROLES)
    end = parse_day(query.to, "to") or utcnow().date()
    start = parse_day(query.from_, "from") or max(date.min, end - timedelta(days=min(USAGE_DEFAULT_DAYS - 1,
                                                                                     (end - date.min).days)))
    if start > end or (end - start).days + 1 > USAGE_MAX_DAYS:
        raise APIError(422, "validation_error", f"from must not be after to, and the range at most {USAGE_MAX_DAYS} "
                       "days", [{"field": "from", "message": "out of range"}])
    until = datetime.combine(end, time.max)
    totals = {row.user_id: row for row in db.session.execute(
        select(Message.user_id, func.sum(case((Message.role == "user", 1), else_=0)).label("questions"),
               func.sum(case((Message.role == "assistant", 1), else_=0)).label("answers"),
               func.coalesce(func.sum(Message.tokens_in), 0).label("tokens_in"),
               func.coalesce(func.sum(Message.tokens_out), 0).label("tokens_out"))
        .join(Membership, Membership.user_id == Message.user_id)
        .where(Membership.organisation_id == me.organisation_id,
               Message.created_at >= datetime.combine(start, time.min), Message.created_at <= until)
        .group_by(Message.user_id))}
    members = db.session.execute(select(User.id, User.email).join(Membership, Membership.user_id == User.id)
                                 .where(Membership.organisation_id == me.organisation_id).order_by(User.id)).all()
    return UsageOut(from_=start.isoformat(), to=end.isoformat(), members=[
        MemberUsage(user_id=uid, email=email, questions=int(totals[uid].questions) if uid in totals else 0,
                    answers=int(totals[uid].answers) if uid in totals else 0,
                    tokens_in=int(totals[uid].tokens_in) if uid in totals else 0,
                    tokens_out=int(totals[uid].tokens_out) if uid in totals else 0)
        for uid, email in members])
