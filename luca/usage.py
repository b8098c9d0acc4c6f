"""What AI answers cost and who spent it: GET /api/me/usage (everyone) and GET /api/usage (org admins, operators).

A blueprint of its own: the conversations blueprint is the member's API and the admin one is
operators-only under /api/admin, while usage is one query (report()) that members, org owners and
admins (their organisation) and operators (everyone) read with different scopes. Every figure is
summed when asked from the answers (budgets.answered: the messages table, and the usage records
of /v1 calls stored in no conversation; titles are reported beside them), so it is exact.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from flask import Blueprint, Response, request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, case, func, select

from luca import analytics, budgets, pricing
from luca.accounts import service as accounts
from luca.admin.routes import parse_day
from luca.api import API_ERRORS, endpoints
from luca.auth import current_user, require_user
from luca.errors import APIError
from luca.extensions import db
from luca.models import Conversation, Membership, utcnow
from luca.schemas import Money

bp = Blueprint("usage", __name__)
bp.before_request(require_user)
endpoint = endpoints(errors=API_ERRORS)

MAX_DAYS = 366
DAY = r"^\d{4}-\d{2}-\d{2}$"

# What group_by groups on, given the answers' columns ("org" reads the members' organisation, joined in report()).
GROUPS: dict[str, Callable[[Any], Any]] = {
    "day": lambda c: func.date(c.created_at),
    "user": lambda c: c.user_id,
    "model": lambda c: func.coalesce(c.model, analytics.NOT_APPLICABLE),
    "provider": lambda c: func.coalesce(c.provider, analytics.NOT_APPLICABLE),
    "source": lambda c: c.source,
    "org": lambda c: Membership.organisation_id,
}
OPERATORS_ONLY = {"org"}
CSV_FIELDS = ("group", "answers", "tokens_in", "tokens_out", "cost_usd", "saved_usd", "cached_share")


class UsageQuery(BaseModel):
    """Query string of a usage report; both ends are UTC days and inclusive."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(None, alias="from", pattern=DAY,
                              description="First day, YYYY-MM-DD (default: the first of this month, UTC)")
    to: str | None = Field(None, pattern=DAY, description="Last day, YYYY-MM-DD (default: today, UTC)")
    group_by: Literal["day", "user", "model", "provider", "source", "org"] | None = Field(
        None, description="org is for operators only (403 for anyone else)")


class UsageTotals(BaseModel):
    """Answers and what they cost; cached_share is the share of answers deduplication served."""

    answers: int
    tokens_in: int
    tokens_out: int
    cost_usd: Money
    saved_usd: Money
    cached_share: float


class UsageItem(UsageTotals):
    """One group's totals: a day (YYYY-MM-DD), a user id, a model, a provider, a source ("api", "openai-api") or an
    organisation id ("-" for none)."""

    group: str


class UsageReport(BaseModel):
    """Usage from `from` to `to`: totals, per group when grouped, and what writing titles cost."""

    model_config = ConfigDict(serialize_by_alias=True, populate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    group_by: str | None
    totals: UsageTotals
    items: list[UsageItem]
    titles_cost_usd: Money


def date_range(query: UsageQuery) -> tuple[date, date]:
    """The inclusive days asked for, checked: from <= to, at most MAX_DAYS days."""
    today = utcnow().date()
    end = parse_day(query.to, "to") or today
    start = parse_day(query.from_, "from") or min(today, end).replace(day=1)
    if start > end:
        raise APIError(422, "validation_error", "from is after to",
                       [{"field": "from", "message": "must not be after to"}])
    if (end - start).days + 1 > MAX_DAYS:
        raise APIError(422, "range_too_long", f"at most {MAX_DAYS} days at a time",
                       [{"field": "to", "message": f"at most {MAX_DAYS} days after from"}])
    return start, end


def totals_of(row: Any) -> dict[str, Any]:
    """One result row's sums as the report's fields."""
    answers = int(row.answers or 0)
    return {"answers": answers, "tokens_in": int(row.tokens_in or 0), "tokens_out": int(row.tokens_out or 0),
            "cost_usd": pricing.money(Decimal(str(row.cost_usd or 0))),
            "saved_usd": pricing.money(Decimal(str(row.saved_usd or 0))),
            "cached_share": round(int(row.cached or 0) / answers, 4) if answers else 0.0}


def report(start: date, end: date, scope: Callable[[Any], ColumnElement[bool]] | None,
           group_by: str | None) -> UsageReport:
    """Sum the answers of [start, end] within scope (a condition on a user_id column; None: everyone), grouped."""
    first, after = analytics.day_bounds(start, end)
    rows = budgets.answered(first, after, scope)
    c = rows.c
    sums = (func.count().label("answers"), func.sum(c.tokens_in).label("tokens_in"),
            func.sum(c.tokens_out).label("tokens_out"), func.sum(c.cost_usd).label("cost_usd"),
            func.sum(c.saved_usd).label("saved_usd"), func.sum(case((c.cached, 1), else_=0)).label("cached"))
    stmt = select(*sums).select_from(rows)
    titles = select(func.coalesce(func.sum(Conversation.title_cost_usd), 0)).where(
        Conversation.titled_at >= first, Conversation.titled_at < after)
    if scope is not None:
        titles = titles.where(scope(Conversation.user_id))
    total = db.session.execute(stmt).one()
    items = []
    if group_by is not None:
        key = GROUPS[group_by](c).label("group")
        grouped = stmt.add_columns(key)
        if group_by == "org":
            grouped = grouped.outerjoin(Membership, Membership.user_id == c.user_id)
        for row in db.session.execute(grouped.group_by(key).order_by(key)):
            group = (row.group.isoformat() if isinstance(row.group, date)
                     else analytics.NOT_APPLICABLE if row.group is None else str(row.group))
            items.append(UsageItem(group=group, **totals_of(row)))
    titles_cost = db.session.execute(titles).scalar_one()
    return UsageReport(from_=start, to=end, group_by=group_by, totals=UsageTotals(**totals_of(total)), items=items,
                       titles_cost_usd=pricing.money(Decimal(str(titles_cost))))


def as_csv(usage: UsageReport) -> Response:
    """The report as CSV: a row per group, or one `total` row when ungrouped."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    rows = usage.items or [UsageItem(group="total", **usage.totals.model_dump())]
    for item in rows:
        writer.writerow([item.model_dump(mode="json")[name] for name in CSV_FIELDS])
    filename = f"luca-usage-{usage.from_}-{usage.to}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def respond(usage: UsageReport) -> Any:
    """JSON, or CSV when the client prefers text/csv."""
    if request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv":
        return as_csv(usage)
    return usage


def scoped(holder: budgets.Holder) -> Callable[[Any], ColumnElement[bool]]:
    """The condition on a user_id column for a budget holder's spending (budgets.SCOPES)."""
    kind, holder_id = holder
    return lambda column: budgets.SCOPES[kind](column, holder_id)


def check_grouping(query: UsageQuery) -> None:
    """403 for a grouping only operators may ask for (it is well-formed, but not theirs to see)."""
    if query.group_by in OPERATORS_ONLY and not current_user().is_admin:
        raise APIError(403, "forbidden", f"group_by={query.group_by} is for operators",
                       [{"field": "group_by", "message": "operators only"}])


@bp.get("/me/usage")
@endpoint(query=UsageQuery, response=UsageReport, errors=(403, 422))
def my_usage(query: UsageQuery) -> Any:
    """The signed-in user's answers and their cost (CSV with Accept: text/csv)."""
    check_grouping(query)
    start, end = date_range(query)
    return respond(report(start, end, scoped(("member", current_user().id)), query.group_by))


@bp.get("/usage")
@endpoint(query=UsageQuery, response=UsageReport, errors=(403, 422))
def usage(query: UsageQuery) -> Any:
    """Answers and their cost: an org owner's or admin's organisation, every organisation for operators (CSV with
    Accept: text/csv; group_by=org for operators only)."""
    user = current_user()
    if user.is_admin:
        scope = None
    else:
        scope = scoped(("org", accounts.require_role(*accounts.ADMIN_ROLES).organisation_id))
    check_grouping(query)
    start, end = date_range(query)
    return respond(report(start, end, scope, query.group_by))

