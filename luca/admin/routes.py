"""Operator endpoints under /api/admin."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from luca import analytics, extensions
from luca.admin import bp, endpoint
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


# The statistics keep the camelCase field names of the project's seed (the operator page and
# existing dashboards read them); the services build them as dicts, validated here into one shape.
def absent_when_none(value: Any) -> bool:
    """Leave a field out of the JSON when it has no value (a figure only one mode knows)."""
    return value is None


class Statistics(BaseModel):
    """A statistics document: exactly the fields declared, nothing else."""

    model_config = ConfigDict(extra="forbid")


class QueueCounts(Statistics):
    """One queue's jobs: waiting and running now, and outcomes counted since the statistics began."""

    waiting: int
    active: int
    scheduled: int | None = Field(None, exclude_if=absent_when_none, description="Waiting to retry (RQ only)")
    inFailedRegistry: int | None = Field(None, exclude_if=absent_when_none,
                                         description="Kept in RQ's failed registry (RQ only)")
    completed: int
    failed: int = Field(description="Failed on their last attempt")
    retried: int = Field(description="Failed attempts that were tried again")
    failureRate: float | None = Field(description="failed / (completed + failed); null before any finished")


class RedisStatus(Statistics):
    """Whether Redis answers."""

    status: str
    ready: bool


class QueueStats(Statistics):
    """Per queue: waiting, active, completed, failed ...; whether Redis answers, and where jobs run."""

    titleGeneration: QueueCounts
    fileProcessing: QueueCounts
    analytics: QueueCounts
    redis: RedisStatus
    mode: Literal["rq", "thread", "inline"]


@bp.get("/queue-stats")
@endpoint(response=QueueStats, errors=(403,))
def queue_stats() -> QueueStats:
    """Background queues: depth, activity, outcomes and failure rate per queue (admins only)."""
    return QueueStats.model_validate(jobs.stats())


class CacheTier(Statistics):
    """Lookups one tier answered."""

    hits: int
    misses: int
    hitRate: float | None


class MemoryTier(CacheTier):
    """The in-process tier."""

    keys: int


class RedisTier(CacheTier):
    """The Redis tier."""

    configured: bool
    status: str
    ready: bool
    breaker: str


class DedupCounts(Statistics):
    """AI answers deduplication served (hits), waited for (waited) or had computed (misses)."""

    hits: int
    waited: int
    misses: int
    savedCalls: int
    hitRate: float | None


class CacheTTL(Statistics):
    """Seconds a value lives in Redis (default) and in memory while Redis is down (fallback)."""

    default: int
    fallback: int


class CacheStats(Statistics):
    """Hits and misses per tier, deduplication's saved calls, hit rates and Redis status."""

    enabled: bool
    hitRate: float | None
    memory: MemoryTier
    redis: RedisTier
    dedup: DedupCounts
    ttl: CacheTTL


@bp.get("/cache-stats")
@endpoint(response=CacheStats, errors=(403,))
def cache_stats() -> CacheStats:
    """Cache hits and misses per tier, deduplication's saved calls, Redis status (admins only)."""
    return CacheStats.model_validate(cache.get_stats())


class BreakerCounts(Statistics):
    """A breaker's counts in this process, and its threshold and timing."""

    failures: int
    successes: int
    rejections: int
    consecutiveFailures: int
    failMax: int
    resetTimeout: float
    lastFailure: str | None
    lastFailureAt: str | None = Field(description="ISO 8601 time")
    openedAt: str | None = Field(description="ISO 8601 time")
    retryAfter: float = Field(description="Seconds until an open breaker lets a trial call through")


class BreakerState(Statistics):
    """One breaker: its state and counts."""

    state: Literal["closed", "open", "half-open"]
    stats: BreakerCounts


class BreakerStats(Statistics):
    """Every breaker: database, externalAPI, redis, and one per AI provider (by breaker name)."""

    database: BreakerState
    externalAPI: BreakerState
    redis: BreakerState
    aiProviders: dict[str, BreakerState]


class BreakerReset(BreakerState):
    """The breaker just closed by hand."""

    name: str


@bp.get("/breakers")
@endpoint(response=BreakerStats, errors=(403,))
def breakers() -> BreakerStats:
    """Every circuit breaker's state and counts (admins only)."""
    return BreakerStats.model_validate(extensions.breakers.stats())  # (this module's breakers() is the view)


@bp.post("/breakers/<name>/reset")
@endpoint(response=BreakerReset, errors=(403, 404))
def reset_breaker(name: str) -> BreakerReset:
    """Close a breaker by hand, e.g. after fixing a provider's key (admins only)."""
    breaker = extensions.breakers.find(name)
    if breaker is None:
        raise not_found("breaker")
    breaker.reset()
    return BreakerReset.model_validate({"name": breaker.name, **breaker.stats()})


class AlertOut(Statistics):
    """One alert rule's verdict."""

    name: str
    firing: bool
    value: int | float | None
    threshold: int | float
    message: str
    since: str | None = Field(description="ISO 8601 time of its last change, seen by this process")


class AlertList(Statistics):
    """The four alert rules, evaluated now."""

    firing: int = Field(description="How many are firing")
    alerts: list[AlertOut]


@bp.get("/alerts")
@endpoint(response=AlertList, errors=(403,))
def alerts() -> AlertList:
    """The four alert rules, evaluated now (admins only)."""
    evaluated = extensions.alerts.evaluate()
    return AlertList.model_validate({"firing": sum(a["firing"] for a in evaluated), "alerts": evaluated})
