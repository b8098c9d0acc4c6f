"""Operator endpoints under /api/admin."""
from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from luca import analytics, extensions
from luca.admin import bp
from luca.api import endpoint
from luca.errors import APIError, not_found
from luca.extensions import cache, db, jobs
from luca.models import User, utcnow
from luca.schemas import UserOut

ANALYTICS_DEFAULT_DAYS = 14
ANALYTICS_MAX_DAYS = 366
DAY = r"^\d{4}-\d{2}-\d{2}$"


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


class AnalyticsQuery(BaseModel):
    """Query string of the analytics series; both ends are UTC days and inclusive."""

    from_: str | None = Field(None, alias="from", pattern=DAY, description="First day, YYYY-MM-DD (default: `to` minus 13 days)")
    to: str | None = Field(None, pattern=DAY, description="Last day, YYYY-MM-DD (default: today, UTC)")


class AnalyticsTotals(BaseModel):
    """Sums over a day's rows, or over the whole range."""

    messages: int
    tokens_in: int
    tokens_out: int
    cached: int
    cost_usd: float


class AnalyticsRow(AnalyticsTotals):
    """One day's messages of one provider, model and role ("-" when a message has no provider or model)."""

    provider: str
    model: str
    role: str
    latency_mean_ms: float | None
    latency_p95_ms: float | None


class AnalyticsDay(BaseModel):
    """One day of the series; days without rows are included with zero totals."""

    day: date
    rows: list[AnalyticsRow]
    totals: AnalyticsTotals


class AnalyticsSeries(BaseModel):
    """Rolled-up usage for every day from `from` to `to`, oldest first."""

    model_config = ConfigDict(serialize_by_alias=True)

    from_: date = Field(alias="from")
    to: date
    days: list[AnalyticsDay]
    totals: AnalyticsTotals


def parse_day(value: str | None, field: str) -> date | None:
    """A YYYY-MM-DD query value as a date; 422 for a day that does not exist."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise APIError(422, "validation_error", f"{field} is not a day", [{"field": field,
                                                                            "message": "not a valid YYYY-MM-DD day"}]) from None


@bp.get("/analytics")
@endpoint(query=AnalyticsQuery, response=AnalyticsSeries, errors=(403, 422))
def analytics_series(query: AnalyticsQuery) -> AnalyticsSeries:
    """Daily messages, tokens, latency, cached answers and cost per provider and model (admins only)."""
    end = parse_day(query.to, "to") or utcnow().date()
    start = parse_day(query.from_, "from") or max(date.min, end - timedelta(days=min(
        ANALYTICS_DEFAULT_DAYS - 1, (end - date.min).days)))
    if start > end:
        raise APIError(422, "validation_error", "from must not be after to",
                       [{"field": "from", "message": "must not be after to"}])
    if (end - start).days + 1 > ANALYTICS_MAX_DAYS:
        raise APIError(422, "validation_error", f"the range may cover at most {ANALYTICS_MAX_DAYS} days",
                       [{"field": "to", "message": f"at most {ANALYTICS_MAX_DAYS} days after from, counting both"}])
    if jobs.mode != "rq":  # no worker keeps the rollups current: bring the range up to date first
        analytics.roll_up_stale(start, end)
    return AnalyticsSeries.model_validate(analytics.series(start, end))


class QueueStats(BaseModel):
    """Per queue: waiting, active, completed, failed ...; and whether Redis answers."""

    model_config = ConfigDict(extra="allow")


@bp.get("/queue-stats")
@endpoint(response=QueueStats, errors=(403,))
def queue_stats() -> QueueStats:
    """Background queues: depth, activity, outcomes and failure rate per queue (admins only)."""
    return QueueStats.model_validate(jobs.stats())


class Stats(BaseModel):
    """A statistics document (its shape is described in the README)."""

    model_config = ConfigDict(extra="allow")


@bp.get("/cache-stats")
@endpoint(response=Stats, errors=(403,))
def cache_stats() -> Stats:
    """Cache hits and misses per tier, deduplication's saved calls, Redis status (admins only)."""
    return Stats.model_validate(cache.get_stats())


@bp.get("/breakers")
@endpoint(response=Stats, errors=(403,))
def breakers() -> Stats:
    """Every circuit breaker's state and counts (admins only)."""
    return Stats.model_validate(extensions.breakers.stats())  # (this module's breakers() is the view)


@bp.post("/breakers/<name>/reset")
@endpoint(response=Stats, errors=(403, 404))
def reset_breaker(name: str) -> Stats:
    """Close a breaker by hand, e.g. after fixing a provider's key (admins only)."""
    breaker = extensions.breakers.find(name)
    if breaker is None:
        raise not_found("breaker")
    breaker.reset()
    return Stats.model_validate({"name": breaker.name, **breaker.stats()})


@bp.get("/alerts")
@endpoint(response=Stats, errors=(403,))
def alerts() -> Stats:
    """The four alert rules, evaluated now (admins only)."""
    evaluated = extensions.alerts.evaluate()
    return Stats.model_validate({"firing": sum(a["firing"] for a in evaluated), "alerts": evaluated})
