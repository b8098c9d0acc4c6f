"""Monthly budgets: the expected cost of an AI call is reserved before the call and settled after.

A budget belongs to a holder, (kind, id): ("member", user_id) or ("org", organisation_id);
`SCOPES` says whose spending each kind covers and `holders_for()` which holders a user's spending
counts towards (their own and their organisation's: a call must fit both). A month is the UTC
calendar month.

The database is the truth: a holder's month spend is the sum of the cost of the month's answers
(`answered()`: stored ones in messages, unstored /v1 ones in usage_records) and
`conversations.title_cost_usd`. What is not in the database yet — calls in flight
— is held in a ledger: with Redis, a hash per holder and month, `<prefix>budget:<kind>:<id>:<month>`,
changed only by Lua scripts (so every process sees one ledger and a reservation is atomic);
without Redis, or while it fails, a dict in the process (correct within one process).

Reserving: note the ledger's running total of settled costs, read the month spend, then in one
script drop expired reservations and take the expected cost (context tokens plus
AI_MAX_OUTPUT_TOKENS at the dearest price of the provider chain, which may fall back) only if
spend + open reservations + what was settled since the note fits the budget. Settling, after the
answer's commit, removes the reservation and adds its real cost to the settled total: a read that
began before the settle may have missed the commit, and counts it through the total instead; one
that began after sees it in the database alone. No clocks are compared. A process that dies
leaves reservations that expire after BUDGET_RESERVATION_SECONDS. Amounts in the ledger are
integer units of 1e-10 USD (Lua numbers are doubles, exact for integers).
"""
from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from flask import Flask, current_app, g, has_request_context
from sqlalchemy import ColumnElement, Subquery, func, insert, or_, select, tuple_, union_all, update

from luca import pricing
from luca.ai.base import ChatMessage, estimate_tokens
from luca.cache import cache_key
from luca.errors import APIError
from luca.extensions import alerts, budget_ledger, cache, db, dedup, providers, redis_gateway
from luca.models import Budget, Conversation, Membership, Message, UsageRecord, utcnow
from luca.schemas import money_text
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

Holder = tuple[str, int]

# Whose spending a holder's budget covers, as a condition on a user_id column. An organisation's is
# its current members' (a removed member's spending leaves it with them).
SCOPES: dict[str, Callable[[Any, int], ColumnElement[bool]]] = {
    "member": lambda column, user_id: column == user_id,
    "org": lambda column, org_id: column.in_(select(Membership.user_id).where(Membership.organisation_id == org_id)),
}
HOLDER_NAMES = {"member": "member", "org": "organisation"}  # as alerts name them
ALERT_LEVELS = (80, 100)
LEDGER_IDLE = 3600  # seconds a holder's ledger outlives its last change (it holds the settled total)
UNIT = Decimal("1e-10")

# KEYS[1]: a holder's ledger for a month: 'r:<id>' = '<units>:<expiry ms>' per open reservation,
# 'settled' = the running total of settled units. ARGV: now (ms), the settled total noted before
# the spend read, the room left (budget - spend, units), the amount, the reservation id, its expiry
# (ms), the key's TTL (ms). Returns {1 taken | 0 refused, units held by others}.
RESERVE = """
local now = tonumber(ARGV[1])
local held = math.max(0, tonumber(redis.call('HGET', KEYS[1], 'settled') or '0') - tonumber(ARGV[2]))
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local name = entries[i]
  if string.sub(name, 1, 2) == 'r:' then
    local amount, expires = string.match(entries[i + 1], '^(%d+):(%d+)$')
    if tonumber(expires) <= now then redis.call('HDEL', KEYS[1], name) else held = held + tonumber(amount) end
  end
end
if held + tonumber(ARGV[4]) > tonumber(ARGV[3]) then
  return {0, tostring(held)}
end
redis.call('HSET', KEYS[1], 'r:' .. ARGV[5], ARGV[4] .. ':' .. ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return {1, tostring(held)}
"""

# KEYS[1]: the ledger; ARGV: the reservation id, its real cost (units), the key's TTL (ms).
SETTLE = """
redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'settled', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def units(amount: Decimal) -> int:
    """USD as integer ledger units (rounded up: a reservation never holds less than its cost)."""
    return int((amount / UNIT).to_integral_value(rounding=ROUND_CEILING))


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month around now: [first day 00:00, next month's first day 00:00)."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def seconds_until_month_end(now: datetime) -> int:
    """Whole seconds until the next UTC month begins (at least 1)."""
    return max(1, math.ceil((month_bounds(now)[1] - now).total_seconds()))


def organisation_of(user_id: int) -> int | None:
    """The user's organisation: the signed-in user's costs no query; a job's user is looked up."""
    user = g.get("user") if has_request_context() else None
    if user is not None and user.id == user_id:
        return user.organisation_id
    return db.session.execute(select(Membership.organisation_id).where(Membership.user_id == user_id)).scalar()


def holders_for(user_id: int) -> list[Holder]:
    """The holders whose budgets a user's spending counts towards: theirs, and their organisation's."""
    organisation_id = organisation_of(user_id)
    return [("member", user_id)] + ([("org", organisation_id)] if organisation_id is not None else [])


def budget_cache_key(holder: Holder) -> str:
    """The cache key of a holder's budget (most holders have none: a send then costs no query)."""
    return cache_key("budget", *holder)


def budgets_of(holders: Sequence[Holder]) -> dict[Holder, Decimal]:
    """The monthly budget of each holder that has one (read through the cache; a change shows within CACHE_NEAR_TTL)."""
    found: dict[Holder, Decimal] = {}
    missing = []
    for holder in holders:
        cached = cache.get(budget_cache_key(holder), near=True)
        if cached is None:
            missing.append(holder)
        elif cached:
            found[holder] = Decimal(cached[0])
    if missing:
        rows = dict(((kind, holder_id), Decimal(amount)) for kind, holder_id, amount in db.session.execute(
            select(Budget.holder_kind, Budget.holder_id, Budget.monthly_budget_usd)
            .where(tuple_(Budget.holder_kind, Budget.holder_id).in_(missing))).all())
        for holder in missing:
            amount = rows.get(holder)
            cache.set(budget_cache_key(holder), [str(amount)] if amount is not None else [], near=True)
            if amount is not None:
                found[holder] = amount
    return found


def set_budget(holder: Holder, monthly_budget_usd: Decimal | None) -> None:
    """Give a holder a monthly budget, change it, or (None) remove it; committed."""
    kind, holder_id = holder
    if kind not in SCOPES:
        raise ValueError(f"no such budget holder kind: {kind}")
    if monthly_budget_usd is not None and not Decimal(0) <= monthly_budget_usd < Decimal("1e8"):
        raise ValueError("a monthly budget is from 0 to 99,999,999 USD")
    row = db.session.get(Budget, (kind, holder_id))
    if monthly_budget_usd is None:
        if row is not None:
            db.session.delete(row)
    elif row is None:
        db.session.add(Budget(holder_kind=kind, holder_id=holder_id,
                              monthly_budget_usd=pricing.money(monthly_budget_usd), updated_at=utcnow()))
    else:
        row.monthly_budget_usd, row.updated_at = pricing.money(monthly_budget_usd), utcnow()
    db.session.commit()
    cache.delete(budget_cache_key(holder))


def answered(start: datetime, end: datetime, scope: Callable[[Any], ColumnElement[bool]] | None) -> Subquery:
    """Every answer of [start, end) within scope (a condition on a user_id column; None: everyone), one row each.

    Stored answers (messages) and answers stored in no conversation (usage_records), with the
    columns both have: the one query usage and budgets read.
    """
    arms = []
    for table in (Message, UsageRecord):
        arm = select(table.user_id, table.created_at, table.source, table.provider, table.model, table.tokens_in,
                     table.tokens_out, table.cached, table.cost_usd, table.saved_usd).where(
            table.created_at >= start, table.created_at < end)
        if table is Message:
            arm = arm.where(Message.role == "assistant")
        arms.append(arm if scope is None else arm.where(scope(table.user_id)))
    return union_all(*arms).subquery("answered")


def record_unstored(user_id: int, source: str, provider: str | None, model: str | None, tokens_in: int | None,
                    tokens_out: int | None, cached: bool) -> Decimal:
    """Record an answer stored in no conversation (its cost, or its saving when deduplicated); committed.

    Returns what it cost, and counts that towards the request's reservations (see spent()).
    """
    cost, saved = pricing.charged(provider, model, tokens_in, tokens_out, cached)
    db.session.execute(insert(UsageRecord).values(
        user_id=user_id, source=source, provider=provider, model=model, tokens_in=tokens_in, tokens_out=tokens_out,
        cached=cached, cost_usd=cost, saved_usd=saved, created_at=utcnow()))
    db.session.commit()
    spent(cost)
    return cost


def month_spend(holder: Holder, now: datetime | None = None) -> Decimal:
    """What a holder spent this UTC month, from the database: answers and titles."""
    start, end = month_bounds(now or utcnow())
    kind, holder_id = holder
    scope = SCOPES[kind]
    rows = answered(start, end, lambda column: scope(column, holder_id))
    answers = select(func.coalesce(func.sum(rows.c.cost_usd), 0))
    titles = (select(func.coalesce(func.sum(Conversation.title_cost_usd), 0))
              .where(scope(Conversation.user_id, holder_id), Conversation.titled_at >= start,
                     Conversation.titled_at < end))
    spent_answers, spent_titles = db.session.execute(select(answers.scalar_subquery(),
                                                            titles.scalar_subquery())).one()
    return pricing.money(Decimal(str(spent_answers)) + Decimal(str(spent_titles)))


def expected_cost(context: Sequence[ChatMessage], route: Sequence[Any] | None = None,
                  max_tokens: int | None = None) -> Decimal:
    """The most a call can cost: the context's tokens plus AI_MAX_OUTPUT_TOKENS (or a lower max_tokens asked for),
    at the dearest price of the route (default: the provider chain, which may fall back)."""
    tokens_in = sum(estimate_tokens(m["content"]) for m in context)
    tokens_out = current_app.config["AI_MAX_OUTPUT_TOKENS"]
    if max_tokens is not None:  # the providers cap what a client asks for at AI_MAX_OUTPUT_TOKENS
        tokens_out = min(tokens_out, max_tokens)
    prices = pricing.price_table()
    return max((pricing.cost_usd(p.name, p.model, tokens_in, tokens_out, prices)
                for p in (providers.all() if route is None else route)), default=pricing.ZERO)


class BudgetExceeded(APIError):
    """A 429: the call would take a holder past its monthly budget. Nothing was stored."""

    def __init__(self, holder: Holder, budget: Decimal, spent: Decimal, held: Decimal, now: datetime) -> None:
        kind, holder_id = holder
        whose = "your" if kind == "member" else "your organisation's"
        budget_text, spent_text = money_text(budget), money_text(spent)
        super().__init__(
            429, "budget_exceeded",
            f"this would take {whose} monthly AI budget of {budget_text} USD past its limit "
            f"({spent_text} USD spent this month); it renews on the 1st (UTC)",
            details={"holder": kind, "holder_id": holder_id, "month": now.strftime("%Y-%m"),
                     "budget_usd": budget_text, "spent_usd": spent_text, "reserved_usd": money_text(held)},
            headers={"Retry-After": str(seconds_until_month_end(now))})
        self.holder = holder


@dataclass(eq=False)
class Reservation:
    """An expected cost held against some budgets until settle() replaces it with the real cost."""

    id: str
    amount: Decimal
    month: str
    budgets: dict[Holder, Decimal]
    holds: list[tuple[str, bool]] = field(default_factory=list)  # (ledger key, held in Redis)
    cost: Decimal = pricing.ZERO  # what was spent meanwhile (answers written)
    settled: bool = False

    def settle(self, cost: Decimal | None = None) -> None:
        """Give the reservation back and add the real cost to the ledger's settled total; then check the alerts."""
        if self.settled:
            return
        self.settled = True
        real = self.cost if cost is None else cost
        ledger = budget_ledger.of()
        for key, shared in self.holds:
            ledger.settle(key, self.id, units(real), shared)
        if real > 0:
            announce_levels(self.budgets, self.month)


class BudgetLedger:
    """The reservations in flight: in Redis across processes, in this process when Redis is absent or fails."""

    def __init__(self, app: Flask) -> None:
        gateway = redis_gateway.of(app)
        self.gateway = gateway
        self.redis = gateway.client
        self.lease: float = app.config["BUDGET_RESERVATION_SECONDS"]
        self._reserve = self.redis.register_script(RESERVE) if self.redis is not None else None
        self._settle = self.redis.register_script(SETTLE) if self.redis is not None else None
        self._open: dict[str, dict[str, tuple[int, float]]] = {}  # key -> reservation id -> (units, expiry)
        self._settled: dict[str, int] = {}  # key -> settled total
        self._lock = threading.Lock()
        app.teardown_request(settle_request)

    def key(self, holder: Holder, month: str) -> str:
        """The Redis key of a holder's ledger for a month."""
        return self.gateway.key("budget", holder[0], holder[1], month)

    def note(self, key: str) -> tuple[int, bool]:
        """The settled total now (before reading the spend), and whether it is Redis's."""
        if self.redis is not None:
            try:
                return int(self.redis.hget(key, "settled") or 0), True
            except REDIS_ERRORS as exc:
                log.warning("[Budgets] Redis did not answer (%s); reserving in this process", type(exc).__name__)
        with self._lock:
            return self._settled.get(key, 0), False

    def take(self, key: str, reservation_id: str, amount: int, room: int,
             noted: tuple[int, bool]) -> tuple[bool, int, bool]:
        """Reserve amount units if they fit in room with what the ledger holds: (taken, units held, in Redis)."""
        now = time.time()
        settled_before, shared = noted
        if shared and self._reserve is not None:
            try:
                taken, held = self._reserve(keys=[key], args=[
                    int(now * 1000), settled_before, room, amount, reservation_id, int((now + self.lease) * 1000),
                    int((self.lease + LEDGER_IDLE) * 1000)])
                return bool(taken), int(held), True
            except REDIS_ERRORS as exc:  # noted in Redis, taken here: the settled total is not comparable
                log.warning("[Budgets] Redis did not answer (%s); reserving in this process", type(exc).__name__)
                settled_before = self._settled.get(key, 0)
        with self._lock:
            entries = self._open.setdefault(key, {})
            held = max(0, self._settled.get(key, 0) - settled_before)
            for name, (value, expires) in list(entries.items()):
                if expires <= now:
                    del entries[name]
                else:
                    held += value
            if held + amount > room:
                return False, held, False
            entries[reservation_id] = (amount, now + self.lease)
            return True, held, False

    def settle(self, key: str, reservation_id: str, cost: int, shared: bool) -> None:
        """Drop a reservation and add its real cost (units) to the settled total."""
        if shared and self._settle is not None:
            try:
                self._settle(keys=[key], args=[reservation_id, cost, int((self.lease + LEDGER_IDLE) * 1000)])
                return
            except REDIS_ERRORS as exc:  # the reservation expires on its own
                log.warning("[Budgets] could not settle in Redis (%s)", type(exc).__name__)
                return
        with self._lock:
            self._open.get(key, {}).pop(reservation_id, None)
            self._settled[key] = self._settled.get(key, 0) + cost


def reserve(user_id: int, context: Sequence[ChatMessage], allowed_anyway: Callable[[], bool] | None = None,
            route: Sequence[Any] | None = None, max_tokens: int | None = None) -> Reservation | None:
    """Reserve a call's expected cost against every budget the user's spending counts towards (None: no budget).

    BudgetExceeded when one has no room, unless allowed_anyway() says the call costs nothing.
    route and max_tokens narrow the expected cost (see expected_cost).
    """
    budgets = budgets_of(holders_for(user_id))
    if not budgets:
        return None
    expected = expected_cost(context, route, max_tokens)
    now = utcnow()
    month = now.strftime("%Y-%m")
    ledger = budget_ledger.of()
    reservation = Reservation(uuid.uuid4().hex, expected, month, budgets)
    for holder, budget in budgets.items():
        key = ledger.key(holder, month)
        noted = ledger.note(key)  # before the spend is read: what settles from now on counts in the ledger
        spent = month_spend(holder, now)
        room = units(budget - spent) if budget > spent else -1
        taken, held, shared = ledger.take(key, reservation.id, units(expected), room, noted)
        if not taken:
            reservation.settle(pricing.ZERO)
            if allowed_anyway is not None and allowed_anyway():
                return None
            raise BudgetExceeded(holder, budget, spent, pricing.money(held * UNIT), now)
        reservation.holds.append((key, shared))
    return reservation


def reserve_for_request(user_id: int, context: Sequence[ChatMessage],
                        allowed_anyway: Callable[[], bool] | None = None, route: Sequence[Any] | None = None,
                        max_tokens: int | None = None) -> None:
    """Before storing a question: reserve its answer's expected cost until the request ends (BudgetExceeded)."""
    reservation = reserve(user_id, context, allowed_anyway, route, max_tokens)
    if reservation is not None:
        g.setdefault("budget_reservations", []).append(reservation)


def spent(cost: Decimal) -> None:
    """After an answer's commit: what the request spent, settled when it ends."""
    if has_request_context():
        for reservation in g.get("budget_reservations", ()):
            reservation.cost += cost


def settle_request(exc: BaseException | None = None) -> None:
    """teardown_request: settle the request's reservations (after a streamed answer's last event)."""
    for reservation in g.pop("budget_reservations", ()):
        try:
            reservation.settle()
        except Exception:  # noqa: BLE001 - the reservation expires on its own
            log.exception("[Budgets] settling failed")


def reserve_answer(user_id: int, context: list[ChatMessage], file_digests: Sequence[str], use_cache: bool) -> None:
    """Reserve an answer's expected cost for the request (BudgetExceeded), unless deduplication serves it free."""
    from luca.conversations.answers import conversation_key  # answers import budgets

    deduplicator = dedup.of() if use_cache and not cache.disabled else None

    def free() -> bool:
        return deduplicator is not None and deduplicator.cached(conversation_key(context, file_digests)) is not None

    reserve_for_request(user_id, context, free)


@contextmanager
def spending(user_id: int, context: Sequence[ChatMessage]) -> Iterator[Reservation | None]:
    """Reserve for a call made outside a request (a title); settled with the cost set on it, or 0, on exit."""
    reservation = reserve(user_id, context)
    try:
        yield reservation
    finally:
        if reservation is not None:
            reservation.settle()


def record_title_cost(conversation_id: Any, cost: Decimal) -> None:
    """Add what writing a title cost to its conversation (it counts towards this month's budgets)."""
    db.session.execute(update(Conversation).where(Conversation.id == conversation_id).values(
        title_cost_usd=func.coalesce(Conversation.title_cost_usd, 0) + cost, titled_at=utcnow())
        .execution_options(synchronize_session=False))
    db.session.commit()


def announce_levels(budgets: dict[Holder, Decimal], month: str) -> None:
    """Post the 80 % and 100 % alerts of each holder that just reached them, once each (claimed in the database)."""
    for holder, budget in budgets.items():
        if budget <= 0:
            continue
        spent_now = month_spend(holder)
        kind, holder_id = holder
        for level in ALERT_LEVELS:
            if spent_now * 100 < budget * level:
                break
            claimed = db.session.execute(
                update(Budget).where(Budget.holder_kind == kind, Budget.holder_id == holder_id,
                                     or_(Budget.alerted_month.is_(None), Budget.alerted_month != month,
                                         Budget.alerted_percent < level))
                .values(alerted_month=month, alerted_percent=level)
                .execution_options(synchronize_session=False)).rowcount
            db.session.commit()
            if claimed:
                alerts.announce(f"budget_{level}", True, float(spent_now), float(budget),
                                f"{HOLDER_NAMES[kind]} {holder_id} has spent {money_text(spent_now)} of its {money_text(budget)} USD budget "
                                f"for {month} ({level} %)")
