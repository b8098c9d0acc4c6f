"""Daily usage analytics: messages rolled up per day, provider, model and role, with token costs.

`rollup_day()` recomputes one UTC day from the messages table and replaces that day's rows in
`analytics_daily` whole, so running it again is harmless. Messages without a provider or model
(the user's questions) are stored under the placeholder `NOT_APPLICABLE` ("-") for both.
`days_needing_rollup()` finds the days to (re)compute; `series()` reads the rows for the admin API.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Date, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from luca import pricing
from luca.extensions import db
from luca.models import AnalyticsDaily, AnalyticsRollup, Message, utcnow

log = logging.getLogger(__name__)

# Provider and model of messages that have none (the user's questions).
NOT_APPLICABLE = "-"

ROW_FIELDS = ("provider", "model", "role", "messages", "tokens_in", "tokens_out",
              "latency_mean_ms", "latency_p95_ms", "cached", "cost_usd")
TOTAL_FIELDS = ("messages", "tokens_in", "tokens_out", "cached", "cost_usd")


def day_bounds(first: date, last: date | None = None) -> tuple[datetime, datetime]:
    """The naive UTC instants [first 00:00, day after last 00:00)."""
    return datetime.combine(first, time.min), datetime.combine((last or first) + timedelta(days=1), time.min)


def p95(values: Sequence[int]) -> float | None:
    """The 95th percentile by nearest rank of sorted values; None when there are none."""
    if not values:
        return None
    return float(values[math.ceil(0.95 * len(values)) - 1])


def summarise(key: tuple[str, str, str], rows: list[Any], prices: pricing.Prices) -> dict[str, Any]:
    """One analytics_daily row from the messages of one (provider, model, role) group."""
    provider, model, role = key
    latencies = sorted(r.latency_ms for r in rows if r.latency_ms is not None)
    paid = [r for r in rows if not r.cached]
    # Token sums are exact integers, so the cost does not depend on the order rows arrive in.
    cost = float(pricing.cost_usd(provider, model, sum(r.tokens_in or 0 for r in paid),
                                  sum(r.tokens_out or 0 for r in paid), prices))
    return {
        "provider": provider, "model": model, "role": role,
        "messages": len(rows),
        "tokens_in": sum(r.tokens_in or 0 for r in rows),
        "tokens_out": sum(r.tokens_out or 0 for r in rows),
        "latency_mean_ms": sum(latencies) / len(latencies) if latencies else None,
        "latency_p95_ms": p95(latencies),
        "cached": sum(1 for r in rows if r.cached),
        "cost_usd": cost,
    }


def mark_rolled_up(day: date, computed_at: datetime) -> None:
    """Upsert the day's analytics_rollups row (which also locks the day against a concurrent rollup)."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(AnalyticsRollup).values(day=day, computed_at=computed_at)
    db.session.execute(stmt.on_conflict_do_update(index_elements=[AnalyticsRollup.day],
                                                  set_={"computed_at": stmt.excluded.computed_at}))


def rollup_day(day: date) -> int:
    """Recompute one UTC day's analytics rows from its messages, replacing the old ones; return the group count."""
    start, end = day_bounds(day)
    provider = func.coalesce(Message.provider, NOT_APPLICABLE)
    model = func.coalesce(Message.model, NOT_APPLICABLE)
    try:
        # The rollup row is written first: it locks the day, and a message stamped after this
        # computed_at makes the day look stale, so at worst it is recomputed once more.
        mark_rolled_up(day, utcnow())
        rows = db.session.execute(
            select(provider.label("provider"), model.label("model"), Message.role, Message.tokens_in,
                   Message.tokens_out, Message.latency_ms, Message.cached)
            .where(Message.created_at >= start, Message.created_at < end)
            .order_by(provider, model, Message.role)
        ).all()
        prices = pricing.price_table()
        groups = [summarise(key, list(members), prices)
                  for key, members in groupby(rows, key=lambda r: (r.provider, r.model, r.role))]
        db.session.execute(delete(AnalyticsDaily).where(AnalyticsDaily.day == day)
                           .execution_options(synchronize_session=False))
        if groups:
            db.session.execute(insert(AnalyticsDaily), [{"day": day, **group} for group in groups])
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    log.info("analytics rolled up %s: %d messages in %d groups", day, len(rows), len(groups))
    return len(groups)


def days_needing_rollup(since: date, until: date) -> list[date]:
    """Days in [since, until] with messages but no rollup, or with messages newer than their rollup."""
    start, end = day_bounds(since, until)
    message_day = func.date(Message.created_at, type_=Date)  # a date on both databases
    newest = db.session.execute(
        select(message_day, func.max(Message.created_at))
        .where(Message.created_at >= start, Message.created_at < end)
        .group_by(message_day)
    ).all()
    computed = dict(db.session.execute(
        select(AnalyticsRollup.day, AnalyticsRollup.computed_at)
        .where(AnalyticsRollup.day >= since, AnalyticsRollup.day <= until)
    ).all())
    return sorted(day for day, latest in newest if day not in computed or computed[day] < latest)


def roll_up_stale(since: date, until: date) -> list[date]:
    """Roll up, here and now, every day in [since, until] whose messages changed since its rollup."""
    until = min(until, utcnow().date())  # no messages are stamped later (and date.max has no next day)
    days = days_needing_rollup(since, until) if since <= until else []
    for day in days:
        rollup_day(day)
    return days


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of messages, tokens, cached answers and cost over rows."""
    summed: dict[str, Any] = {name: sum(row[name] for row in rows) for name in TOTAL_FIELDS}
    summed["cost_usd"] = float(summed["cost_usd"])
    return summed


def series(start: date, end: date) -> dict[str, Any]:
    """The rolled-up rows of every day in [start, end], with per-day and overall totals."""
    stored = db.session.execute(
        select(AnalyticsDaily.day, *(getattr(AnalyticsDaily, name) for name in ROW_FIELDS))
        .where(AnalyticsDaily.day >= start, AnalyticsDaily.day <= end)
    ).all()
    by_day: dict[date, list[dict[str, Any]]] = {}
    # Sorted here, not in SQL, so the order is the same under every database collation.
    for day, *values in sorted(stored, key=lambda row: tuple(row[:4])):
        by_day.setdefault(day, []).append(dict(zip(ROW_FIELDS, values, strict=True)))
    days = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        rows = by_day.get(day, [])
        days.append({"day": day.isoformat(), "rows": rows, "totals": totals(rows)})
    return {"from": start.isoformat(), "to": end.isoformat(), "days": days,
            "totals": totals([row for rows in by_day.values() for row in rows])}
