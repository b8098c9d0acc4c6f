"""The cache: fewer statements, exact invalidation across processes, Redis outages, stale copies."""
from __future__ import annotations

import logging
import time
import uuid

import pytest
from flask import Flask

from luca.cache import cache_key
from luca.extensions import breakers, cache, db, redis_gateway
from tests.support.api import Api, signed
from tests.support.apps import count_statements, provider_overrides
from tests.support.services import RedisTarget


@pytest.fixture(params=["memory", "redis"])
def tier_app(request, app_factory) -> Flask:
    """An app caching in process memory only, or in real Redis."""
    if request.param == "memory":
        return app_factory()
    target: RedisTarget = request.getfixturevalue("redis_target")
    return app_factory(**target.overrides())


def test_a_cached_conversation_list_makes_no_statements(tier_app) -> None:
    api = signed(tier_app)
    api.new_conversation(title="cached")
    assert api.get("/api/conversations").headers["X-Cache"] == "miss"
    with count_statements(tier_app) as statements:
        response = api.get("/api/conversations")
    assert response.headers["X-Cache"] == "hit"
    assert [c["title"] for c in response.get_json()["items"]] == ["cached"]
    assert statements == []


def test_an_uncached_list_makes_one_statement_because_the_token_is_cached(tier_app) -> None:
    api = signed(tier_app)
    api.get("/api/me")
    api.new_conversation(title="new")  # invalidates the list
    with count_statements(tier_app) as statements:
        assert api.get("/api/conversations").headers["X-Cache"] == "miss"
    assert len(statements) <= 1, statements


def test_me_is_served_from_the_cached_token_lookup(tier_app) -> None:
    api = signed(tier_app, "alice@example.com")
    api.get("/api/me")
    with count_statements(tier_app) as statements:
        assert api.get("/api/me").get_json()["email"] == "alice@example.com"
    assert statements == []


def test_a_cached_conversation_detail_makes_no_statements(tier_app) -> None:
    api = signed(tier_app)
    conversation = api.new_conversation(title="detail")
    api.get(f"/api/conversations/{conversation['id']}")
    with count_statements(tier_app) as statements:
        response = api.get(f"/api/conversations/{conversation['id']}")
    assert response.headers["X-Cache"] == "hit" and statements == []


def test_disable_cache_brings_the_uncached_counts_back(app_factory) -> None:
    app = app_factory(DISABLE_CACHE=True)
    api = signed(app)
    api.new_conversation(title="x")
    api.get("/api/conversations")
    with count_statements(app) as statements:
        response = api.get("/api/conversations")
    assert response.headers["X-Cache"] == "disabled"
    assert len(statements) == 2  # the token lookup and the list, every time


@pytest.mark.parametrize("change", ["create", "rename", "pin", "delete", "message"])
def test_every_change_is_seen_on_the_next_list(tier_app, change: str) -> None:
    api = signed(tier_app)
    first = api.new_conversation(title="first")
    second = api.new_conversation(title="second")
    api.get("/api/conversations")  # cached now
    if change == "create":
        api.new_conversation(title="third")
    elif change == "rename":
        api.patch(f"/api/conversations/{first['id']}", json={"title": "renamed"})
    elif change == "pin":
        api.patch(f"/api/conversations/{first['id']}", json={"pinned": True})
    elif change == "delete":
        api.delete(f"/api/conversations/{second['id']}")
    else:
        api.ask(first["id"], "activity")
    titles = [c["title"] for c in api.get("/api/conversations").get_json()["items"]]
    expected = {"create": ["third", "second", "first"], "rename": ["second", "renamed"],
                "pin": ["first", "second"], "delete": ["first"], "message": ["first", "second"]}[change]
    assert titles == expected


def test_changes_in_one_instance_are_seen_at_once_in_another(app_factory, redis_target: RedisTarget) -> None:
    one, two = app_factory(**redis_target.overrides()), app_factory(**redis_target.overrides())
    api_one = signed(one)
    api_two = Api(two.test_client(), api_one.token, api_one.user_id)
    conversation = api_one.new_conversation(title="before")
    assert [c["title"] for c in api_two.get("/api/conversations").get_json()["items"]] == ["before"]
    assert api_two.get("/api/conversations").headers["X-Cache"] == "hit"

    api_one.patch(f"/api/conversations/{conversation['id']}", json={"title": "after"})
    assert [c["title"] for c in api_two.get("/api/conversations").get_json()["items"]] == ["after"]
    assert api_two.get(f"/api/conversations/{conversation['id']}").get_json()["title"] == "after"

    api_one.new_conversation(title="another")
    assert len(api_two.get("/api/conversations").get_json()["items"]) == 2
    api_one.delete(f"/api/conversations/{conversation['id']}")
    assert [c["title"] for c in api_two.get("/api/conversations").get_json()["items"]] == ["another"]


def test_a_whole_answer_is_seen_at_once_in_another_instance(app_factory, redis_target: RedisTarget,
                                                            servers) -> None:
    # the answer's cache bump is sent in one pipeline with the slot's release (answers.within_slot)
    settings = provider_overrides(servers[0], AI_MAX_CONCURRENT_PER_USER=2, **redis_target.overrides())
    one, two = app_factory(**settings), app_factory(**settings)
    api_one = signed(one)
    api_two = Api(two.test_client(), api_one.token, api_one.user_id)
    conversation = api_one.new_conversation(title="asked")
    path = f"/api/conversations/{conversation['id']}/messages"
    assert api_two.get(path).get_json()["items"] == []
    assert api_two.get(path).headers["X-Cache"] == "hit"
    version = redis_gateway.of(one).cache_client.raw
    key = cache.of(one).redis_key(cache_key("ver", api_one.user_id))
    before = int(version.get(key) or 0)
    assert api_one.ask(conversation["id"], "what is an accrual?", cache=False).status_code == 201
    assert int(version.get(key)) == before + 2  # the question's bump, then the answer's
    assert [m["role"] for m in api_two.get(path).get_json()["items"]] == ["assistant", "user"]


def test_a_revoked_token_stops_working_at_once_even_when_cached(tier_app) -> None:
    api = signed(tier_app)
    assert api.get("/api/me").status_code == 200
    tier_app.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=api.token)
    assert api.get("/api/me").status_code == 401


def test_a_stale_list_is_served_when_the_database_is_down(tier_app) -> None:
    api = signed(tier_app)
    api.new_conversation(title="remembered")
    api.get("/api/conversations")
    api.new_conversation(title="not seen yet")  # the fresh copy is now invalid
    with tier_app.app_context():
        db.engine.dispose()  # no pooled connections: the next query must connect
        breakers.database.open()
    response = api.get("/api/conversations")
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "stale"
    assert [c["title"] for c in response.get_json()["items"]] == ["remembered"]
    other = api.get("/api/conversations?limit=3")  # never cached: no stale copy to serve
    assert other.status_code == 503
    with tier_app.app_context():
        breakers.database.reset()


def test_cache_clear_leaves_rq_queues_alone(app_factory, redis_target: RedisTarget) -> None:
    from rq import Queue

    app = app_factory(**redis_target.overrides())
    api = signed(app)
    api.new_conversation(title="x")
    api.get("/api/conversations")
    queue = Queue(f"test-{uuid.uuid4().hex[:8]}", connection=redis_target.client)
    job = queue.enqueue("builtins.print", "kept")
    try:
        assert list(redis_target.client.scan_iter(match=f"{redis_target.prefix}cache:*"))
        result = app.test_cli_runner().invoke(args=["cache", "clear"])
        assert result.exit_code == 0, result.output
        assert list(redis_target.client.scan_iter(match=f"{redis_target.prefix}cache:*")) == []
        assert queue.count == 1 and queue.job_ids == [job.id]
        assert redis_target.client.exists(f"rq:job:{job.id}")
    finally:
        queue.delete(delete_jobs=True)


def test_cache_set_is_logged_at_debug_level(tier_app, caplog) -> None:
    api = signed(tier_app)
    with caplog.at_level(logging.DEBUG, logger="luca.cache"):
        api.get("/api/conversations")
    assert any(r.getMessage().startswith("[Cache] Set conversations:") and "(TTL: " in r.getMessage()
               for r in caplog.records)


def test_stats_count_hits_and_misses_per_tier(tier_app, request) -> None:
    api = signed(tier_app)
    api.get("/api/conversations")
    api.get("/api/conversations")
    with tier_app.app_context():
        stats = cache.get_stats()
    tier = "redis" if stats["redis"]["configured"] else "memory"
    hits = stats["redis"]["hits"] + stats["memory"]["hits"]  # the token's near copy is a memory hit
    assert hits >= 2 and stats[tier]["misses"] >= 1  # token + list hits; list miss
    assert 0 < stats[tier]["hitRate"] < 1
    assert set(stats) >= {"memory", "redis", "dedup"}


@pytest.mark.sqlite_only
def test_stats_count_the_keys_the_memory_tier_holds(app_factory) -> None:
    app = app_factory()  # no Redis: every value is kept in memory
    service = cache.of(app)
    with app.app_context():
        service.set("a", 1)
        service.set("b", {"x": 2})
        service.set("b", {"x": 3})
        assert service.get_stats()["memory"]["keys"] == 2
        service.delete("a")
        assert service.get_stats()["memory"]["keys"] == 1
        service.clear()
        assert service.get_stats()["memory"]["keys"] == 0


def test_a_redis_killed_mid_test_never_fails_a_request_and_is_used_again_when_back(app_factory, own_redis,
                                                                                     caplog) -> None:
    url, start, kill = own_redis
    app = app_factory(REDIS_URL=url, REDIS_BREAKER_RESET_TIMEOUT=0.5, REDIS_SOCKET_TIMEOUT=0.2)
    api = signed(app)
    conversation = api.new_conversation(title="survives")
    with caplog.at_level(logging.INFO):
        assert api.get("/api/conversations").status_code == 200
        with app.app_context():
            assert cache.get_stats()["redis"]["status"] == "connected"
        kill()
        for _ in range(5):
            assert api.get("/api/conversations").status_code == 200
            assert api.get(f"/api/conversations/{conversation['id']}").status_code == 200
            assert api.ask(conversation["id"], "still answering?").status_code == 201
        with app.app_context():
            stats = cache.get_stats()
        assert stats["redis"]["status"].startswith("unavailable") and stats["redis"]["breaker"] == "open"
        assert stats["memory"]["hits"] + stats["memory"]["misses"] > 0

        start()
        time.sleep(0.6)  # past the redis breaker's reset timeout
        for _ in range(3):
            assert api.get("/api/conversations").status_code == 200
        with app.app_context():
            stats = cache.get_stats()
    assert stats["redis"]["status"] == "connected" and stats["redis"]["breaker"] == "closed"
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("[Cache] Redis unavailable") for line in lines)
    assert any(line.startswith("[Redis] Connected successfully") for line in lines)


def test_message_pages_and_searches_are_cached_until_the_next_message(tier_app) -> None:
    api = signed(tier_app)
    conversation = api.new_conversation(title="x")
    api.ask(conversation["id"], "What is goodwill impairment?")
    path = f"/api/conversations/{conversation['id']}/messages"
    assert api.get(path).headers["X-Cache"] == "miss"
    assert api.get("/api/search?q=impairment").headers["X-Cache"] == "miss"
    with count_statements(tier_app) as statements:
        assert api.get(path).headers["X-Cache"] == "hit"
        assert api.get("/api/search?q=impairment").headers["X-Cache"] == "hit"
    assert statements == []
    api.ask(conversation["id"], "And how is impairment tested?")
    assert len(api.get(path).get_json()["items"]) == 4
    hits = api.get("/api/search?q=tested").get_json()["items"]
    assert any("tested" in h["snippet"] for h in hits)
