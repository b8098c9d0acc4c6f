"""Daily analytics: the rollup of messages, the days that need one, and the admin series endpoint."""
from __future__ import annotations

import time as time_module
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from luca import analytics
from luca.extensions import db, jobs
from luca.models import AnalyticsDaily, AnalyticsRollup, Message, utcnow
from tests.support.api import Api, create_user

DAY1 = date(2026, 3, 1)
DAY2 = date(2026, 3, 2)


def at(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """A naive UTC timestamp on day."""
    return datetime.combine(day, time(hour, minute, second, micro))


def answer(provider: str = "openai", model: str = "gpt-4o-mini", **fields: Any) -> dict[str, Any]:
    """The fields of an assistant answer (DAY1 at 10:00 unless given)."""
    return {"role": "assistant", "provider": provider, "model": model, "created_at": at(DAY1, 10), **fields}


def question(**fields: Any) -> dict[str, Any]:
    """The fields of a user question (DAY1 at 10:00 unless given)."""
    return {"role": "user", "created_at": at(DAY1, 10), **fields}


def add_messages(app, api: Api, *messages: dict[str, Any]) -> list[int]:
    """Insert messages into a new conversation of api's user, directly through the ORM."""
    conversation_id = uuid.UUID(api.new_conversation()["id"])
    with app.app_context():
        rows = [Message(conversation_id=conversation_id, user_id=api.user_id, content=f"message {i}", **fields)
                for i, fields in enumerate(messages)]
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


def rollup(app, day: date = DAY1) -> int:
    """Run the rollup of day."""
    with app.app_context():
        return analytics.rollup_day(day)


def stored_rows(app, day: date = DAY1) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The day's analytics_daily rows keyed by (provider, model, role)."""
    with app.app_context():
        rows = db.session.execute(select(AnalyticsDaily).where(AnalyticsDaily.day == day)).scalars().all()
        return {(r.provider, r.model, r.role): {name: getattr(r, name) for name in analytics.ROW_FIELDS}
                for r in rows}


def test_rollup_groups_by_provider_model_and_role_counting_messages_and_summing_tokens(app, api: Api) -> None:
    add_messages(app, api,
                 question(), question(), question(tokens_in=7),
                 answer(tokens_in=100, tokens_out=20), answer(tokens_in=50, tokens_out=None),
                 answer(model="gpt-4o", tokens_in=10, tokens_out=5),
                 answer(provider="gemini", model="gemini-2.0-flash", tokens_in=None, tokens_out=None))
    assert rollup(app) == 4
    rows = stored_rows(app)
    counts = {key: (r["messages"], r["tokens_in"], r["tokens_out"]) for key, r in rows.items()}
    assert counts == {
        ("-", "-", "user"): (3, 7, 0),
        ("openai", "gpt-4o-mini", "assistant"): (2, 150, 20),
        ("openai", "gpt-4o", "assistant"): (1, 10, 5),
        ("gemini", "gemini-2.0-flash", "assistant"): (1, 0, 0),
    }


def test_rollup_takes_latency_mean_and_nearest_rank_p95_over_known_latencies(app, api: Api) -> None:
    latencies = [200, 10, 190, 20, 180, 30, 170, 40, 160, 50, 150, 60, 140, 70, 130, 80, 120, 90, 110, 100]
    add_messages(app, api, *[answer(latency_ms=ms) for ms in latencies], answer(latency_ms=None), question())
    rollup(app)
    rows = stored_rows(app)
    timed = rows[("openai", "gpt-4o-mini", "assistant")]
    assert timed["latency_mean_ms"] == pytest.approx(105.0)
    assert timed["latency_p95_ms"] == 190.0  # rank ceil(0.95 * 20) = 19 of the sorted values
    assert rows[("-", "-", "user")]["latency_mean_ms"] is None
    assert rows[("-", "-", "user")]["latency_p95_ms"] is None


def test_p95_of_few_values_is_the_largest_and_of_none_is_none() -> None:
    assert analytics.p95([5]) == 5.0
    assert analytics.p95([1, 2, 3]) == 3.0
    assert analytics.p95([]) is None


def test_rollup_counts_cached_answers(app, api: Api) -> None:
    add_messages(app, api, answer(cached=True), answer(cached=True), answer(cached=False), question())
    rollup(app)
    rows = stored_rows(app)
    assert rows[("openai", "gpt-4o-mini", "assistant")]["cached"] == 2
    assert rows[("-", "-", "user")]["cached"] == 0


def test_cost_uses_configured_prices_over_the_defaults(app, api: Api) -> None:
    app.config["AI_PRICES"] = {"gpt-4o-mini": [1.0, 2.0], "local-llama": [0.5, 0.25]}
    add_messages(app, api,
                 answer(tokens_in=1000, tokens_out=500), answer(tokens_in=2000, tokens_out=None),
                 answer(provider="local", model="local-llama", tokens_in=4000, tokens_out=2000),
                 answer(provider="gemini", model="gemini-2.0-flash", tokens_in=10_000, tokens_out=1000))
    rollup(app)
    rows = stored_rows(app)
    assert rows[("openai", "gpt-4o-mini", "assistant")]["cost_usd"] == pytest.approx(1.0 + 1.0 + 2.0)
    assert rows[("local", "local-llama", "assistant")]["cost_usd"] == pytest.approx(2.0 + 0.5)
    assert rows[("gemini", "gemini-2.0-flash", "assistant")]["cost_usd"] == pytest.approx(10 * 0.0001 + 0.0004)


def test_cached_answer_costs_nothing(app, api: Api) -> None:
    app.config["AI_PRICES"] = {"gpt-4o-mini": [1.0, 2.0]}
    add_messages(app, api, answer(tokens_in=1000, tokens_out=1000),
                 answer(tokens_in=1000, tokens_out=1000, cached=True))
    rollup(app)
    row = stored_rows(app)[("openai", "gpt-4o-mini", "assistant")]
    assert (row["messages"], row["tokens_in"], row["cached"]) == (2, 2000, 1)
    assert row["cost_usd"] == pytest.approx(3.0)


def test_offline_provider_unknown_models_and_questions_cost_nothing(app, api: Api) -> None:
    app.config["AI_PRICES"] = {"luca-offline-1": [1.0, 1.0]}
    add_messages(app, api, answer(provider="offline", model="luca-offline-1", tokens_in=1000, tokens_out=1000),
                 answer(provider="somewhere", model="mystery-model", tokens_in=1000, tokens_out=1000),
                 question(tokens_in=1000))
    rollup(app)
    assert {key: row["cost_usd"] for key, row in stored_rows(app).items()} == {
        ("offline", "luca-offline-1", "assistant"): 0.0,
        ("somewhere", "mystery-model", "assistant"): 0.0,
        ("-", "-", "user"): 0.0,
    }


def test_rollup_counts_only_messages_of_its_utc_day(app, api: Api) -> None:
    add_messages(app, api,
                 answer(created_at=at(DAY1, 0, 0, 0, 0), tokens_in=1),
                 answer(created_at=at(DAY1, 23, 59, 59, 999_999), tokens_in=2),
                 answer(created_at=at(DAY1 - timedelta(days=1), 23, 59, 59, 999_999), tokens_in=4),
                 answer(created_at=at(DAY2, 0, 0, 0, 0), tokens_in=8))
    rollup(app)
    row = stored_rows(app)[("openai", "gpt-4o-mini", "assistant")]
    assert (row["messages"], row["tokens_in"]) == (2, 3)


def test_rerunning_rollup_gives_identical_rows(app, api: Api) -> None:
    add_messages(app, api, question(), answer(tokens_in=123, tokens_out=45, latency_ms=678),
                 answer(model="gpt-4o", tokens_in=9, tokens_out=8, latency_ms=7, cached=True))
    first = (rollup(app), stored_rows(app))
    with app.app_context():
        first_computed = db.session.get(AnalyticsRollup, DAY1).computed_at
    second = (rollup(app), stored_rows(app))
    assert second == first
    with app.app_context():
        assert db.session.execute(select(AnalyticsRollup.day)).scalars().all() == [DAY1]
        assert db.session.get(AnalyticsRollup, DAY1).computed_at >= first_computed


def test_rerunning_rollup_replaces_old_numbers_after_messages_change(app, api: Api) -> None:
    ids = add_messages(app, api, answer(tokens_in=10), answer(model="gpt-4o", tokens_in=20))
    rollup(app)
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == ids[0]).values(tokens_in=15))
        db.session.delete(db.session.get(Message, ids[1]))
        db.session.commit()
    add_messages(app, api, answer(provider="gemini", model="gemini-2.0-flash", tokens_in=30))
    assert rollup(app) == 2
    assert {key: row["tokens_in"] for key, row in stored_rows(app).items()} == {
        ("openai", "gpt-4o-mini", "assistant"): 15,
        ("gemini", "gemini-2.0-flash", "assistant"): 30,
    }


def test_rollup_of_a_day_without_messages_clears_its_rows(app, api: Api) -> None:
    ids = add_messages(app, api, answer())
    rollup(app)
    with app.app_context():
        db.session.delete(db.session.get(Message, ids[0]))
        db.session.commit()
    assert rollup(app) == 0
    assert stored_rows(app) == {}


def test_days_needing_rollup_finds_unrolled_and_changed_days_but_not_current_ones(app, api: Api) -> None:
    day0, day3, day4 = DAY1 - timedelta(days=1), DAY2 + timedelta(days=1), DAY2 + timedelta(days=2)
    add_messages(app, api, answer(created_at=at(day0, 9)), answer(created_at=at(DAY1, 9)),
                 answer(created_at=at(DAY2, 9)), answer(created_at=at(DAY2, 13)), answer(created_at=at(day4, 9)))
    rollup(app, DAY1)
    rollup(app, DAY2)
    with app.app_context():
        # DAY2's rollup ran at noon; the 13:00 answer arrived after it.
        db.session.execute(update(AnalyticsRollup).where(AnalyticsRollup.day == DAY2)
                           .values(computed_at=at(DAY2, 12)))
        db.session.commit()
        assert analytics.days_needing_rollup(DAY1, day3) == [DAY2]
        assert analytics.days_needing_rollup(day0, day4) == [day0, DAY2, day4]
        assert analytics.days_needing_rollup(day3, day3) == []


def test_admin_analytics_returns_every_day_of_the_range_including_empty_ones(app, make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    app.config["AI_PRICES"] = {"gpt-4o-mini": [1.0, 2.0]}
    add_messages(app, admin, question(), answer(tokens_in=1000, tokens_out=500, latency_ms=40),
                 answer(created_at=at(DAY2 + timedelta(days=1), 8), tokens_in=2000, cached=True))
    rollup(app, DAY1)
    rollup(app, DAY2 + timedelta(days=1))
    response = admin.get("/api/admin/analytics?from=2026-02-28&to=2026-03-03")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["from"], body["to"]) == ("2026-02-28", "2026-03-03")
    assert [d["day"] for d in body["days"]] == ["2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03"]
    empty = {"messages": 0, "tokens_in": 0, "tokens_out": 0, "cached": 0, "cost_usd": 0.0}
    assert [(d["rows"], d["totals"]) for d in body["days"][::2]] == [([], empty), ([], empty)]
    first = body["days"][1]
    assert first["rows"] == [
        {"provider": "-", "model": "-", "role": "user", "messages": 1, "tokens_in": 0, "tokens_out": 0,
         "latency_mean_ms": None, "latency_p95_ms": None, "cached": 0, "cost_usd": 0.0},
        {"provider": "openai", "model": "gpt-4o-mini", "role": "assistant", "messages": 1, "tokens_in": 1000,
         "tokens_out": 500, "latency_mean_ms": 40.0, "latency_p95_ms": 40.0, "cached": 0, "cost_usd": 2.0},
    ]
    assert first["totals"] == {"messages": 2, "tokens_in": 1000, "tokens_out": 500, "cached": 0, "cost_usd": 2.0}
    assert body["totals"] == {"messages": 3, "tokens_in": 3000, "tokens_out": 500, "cached": 1, "cost_usd": 2.0}


def test_admin_analytics_defaults_to_the_last_fourteen_days(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    body = admin.get("/api/admin/analytics").get_json()
    today = utcnow().date()
    # Around midnight UTC the request may see the next day.
    assert date.fromisoformat(body["to"]) in {today, today + timedelta(days=1)}
    assert date.fromisoformat(body["from"]) == date.fromisoformat(body["to"]) - timedelta(days=13)
    assert len(body["days"]) == 14


def test_admin_analytics_is_403_for_non_admins(api: Api) -> None:
    response = api.get("/api/admin/analytics?from=2026-03-01&to=2026-03-02")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_admin_analytics_rejects_from_after_to(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    response = admin.get("/api/admin/analytics?from=2026-03-02&to=2026-03-01")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"


def test_admin_analytics_rejects_a_range_over_366_days(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    response = admin.get("/api/admin/analytics?from=2025-01-01&to=2026-01-02")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"
    assert len(admin.get("/api/admin/analytics?from=2025-01-01&to=2026-01-01").get_json()["days"]) == 366


def test_admin_analytics_rejects_a_malformed_date(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    response = admin.get("/api/admin/analytics?from=yesterday")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"


def today_by_role(body: dict[str, Any]) -> dict[str, int]:
    """Messages per role on the last day of an analytics series."""
    return {row["role"]: row["messages"] for row in body["days"][-1]["rows"]}


def test_in_the_embedded_mode_todays_analytics_count_the_messages_just_sent(app, make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    conversation = admin.new_conversation()
    with app.app_context():
        assert jobs.mode == "thread"
    admin.ask(conversation["id"], "What is VAT?")
    assert today_by_role(admin.get("/api/admin/analytics").get_json()) == {"user": 1, "assistant": 1}
    admin.ask(conversation["id"], "And input VAT?")
    body = admin.get("/api/admin/analytics").get_json()
    assert body["to"] == utcnow().date().isoformat()
    assert today_by_role(body) == {"user": 2, "assistant": 2}
    assert body["totals"]["messages"] == 4


def test_in_the_embedded_mode_analytics_roll_up_on_their_own(app_factory) -> None:
    app = app_factory(JOBS_RECONCILE_INTERVAL=0.2)
    user_id, token = create_user(app, "alice@example.com")
    api = Api(app.test_client(), token, user_id)
    conversation = api.new_conversation()
    api.ask(conversation["id"], "What is VAT?")
    api.ask(conversation["id"], "And input VAT?")
    deadline = time_module.monotonic() + 20
    while {key[2]: row["messages"] for key, row in stored_rows(app, utcnow().date()).items()} != {
            "user": 2, "assistant": 2}:
        assert time_module.monotonic() < deadline, "today was never rolled up"
        time_module.sleep(0.1)
    with app.app_context():
        assert jobs.stats()["analytics"]["completed"] >= 1
