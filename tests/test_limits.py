"""Rate limits: messages and uploads per user, failed authentication per client address, Redis or memory."""
from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from redis.exceptions import RedisError
from sqlalchemy import select

from luca.extensions import breakers, db, limits
from luca.limits import GatewayStorage
from luca.models import ApiToken
from tests.support.api import Api, basic, create_user, multipart, signed
from tests.support.services import RedisTarget

# Runs once, on SQLite: rate limit counters live in Redis or memory, never in the database.
pytestmark = pytest.mark.sqlite_only

OTHER_ADDRESS = {"REMOTE_ADDR": "10.0.0.2"}


def limited_app(app_factory: Callable[..., Flask], **overrides: Any) -> Flask:
    """An app with its rate limits (create_app gives every app its own)."""
    return app_factory(**overrides)


def send(api: Api, conversation_id: str, count: int) -> list[int]:
    """Send count distinct questions; the status codes."""
    return [api.ask(conversation_id, f"question {uuid.uuid4().hex}").status_code for _ in range(count)]


def assert_rate_limited(response: Any) -> None:
    """429 in Luca's error shape with a whole, positive Retry-After."""
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert response.get_json()["error"]["message"]
    assert response.headers["Retry-After"].isdigit()
    assert int(response.headers["Retry-After"]) >= 1


def bad_token(client: Any, **kwargs: Any) -> Any:
    """A request with a token that does not exist."""
    return client.get("/api/me", headers={"Authorization": "Bearer luca_wrong"}, **kwargs)


def test_the_21st_message_in_a_minute_is_429_and_other_users_are_not_affected(app_factory) -> None:
    app = limited_app(app_factory)
    alice, bob = signed(app), signed(app)
    conversation = alice.new_conversation()
    assert send(alice, conversation["id"], 20) == [201] * 20
    response = alice.ask(conversation["id"], "one too many")
    assert_rate_limited(response)
    assert int(response.headers["Retry-After"]) <= 60
    assert "limit" in response.get_json()["error"]["message"]
    assert send(bob, bob.new_conversation()["id"], 1) == [201]
    assert alice.get(f"/api/conversations/{conversation['id']}").status_code == 200  # other endpoints: no limit


def test_sending_and_retrying_share_one_budget(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_MESSAGES="3 per minute")
    api = signed(app)
    conversation_id = api.new_conversation()["id"]
    message_id = api.ask(conversation_id, "What is VAT?").get_json()["message"]["id"]
    retry = f"/api/conversations/{conversation_id}/messages/{message_id}/retry"
    assert api.post(retry).status_code == 201
    assert send(api, conversation_id, 1) == [201]
    assert_rate_limited(api.post(retry))
    assert_rate_limited(api.ask(conversation_id, "and now?"))


def test_the_upload_past_the_budget_is_429(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_UPLOADS="2 per hour")
    api, other = signed(app), signed(app)

    def upload(who: Api) -> Any:
        body, content_type = multipart({"file": ("notes.txt", b"Invoices are due in 30 days.")})
        path = f"/api/conversations/{who.new_conversation()['id']}/files"
        return who.client.post(path, headers=who.headers(), data=body, content_type=content_type)

    assert [upload(api).status_code for _ in range(2)] == [202, 202]
    response = upload(api)
    assert_rate_limited(response)
    assert 3500 < int(response.headers["Retry-After"]) <= 3600
    assert upload(other).status_code == 202
    assert send(api, api.new_conversation()["id"], 1) == [201]  # uploads and messages are separate budgets


def test_ten_wrong_tokens_then_a_valid_one_from_that_address_is_200_and_an_eleventh_wrong_one_429(
        app_factory) -> None:
    app = limited_app(app_factory)  # RATE_LIMIT_AUTH_FAILURES: 10 per 15 minutes
    api = signed(app)
    assert [bad_token(api.client).status_code for _ in range(10)] == [401] * 10
    assert api.get("/api/me").status_code == 200
    response = bad_token(api.client)
    assert_rate_limited(response)
    assert 800 < int(response.headers["Retry-After"]) <= 900
    message = response.get_json()["error"]["message"]
    assert "failed authentication" in message and "10 per 15 minutes" in message


def test_while_an_address_is_blocked_valid_tokens_from_it_still_work(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    api, admin = signed(app), Api(app.test_client(), *reversed(create_user(app, "limits-admin@example.com", True)))
    assert [bad_token(api.client).status_code for _ in range(2)] == [401, 429]
    assert [api.get(path).status_code for path in ("/api/me", "/api/conversations")] == [200, 200]
    assert api.get("/api/admin/users").status_code == 403  # refused, but authenticated: neither 429 nor counted
    assert admin.get("/api/admin/users").status_code == 200
    assert_rate_limited(bad_token(api.client))


def test_a_revoked_token_counts_as_a_failure(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    revoked = signed(app)
    with app.app_context():
        token_id = db.session.execute(select(ApiToken.id).where(ApiToken.user_id == revoked.user_id)).scalar_one()
    assert app.test_cli_runner().invoke(args=["tokens", "revoke", "--id", str(token_id)]).exit_code == 0
    assert revoked.get("/api/me").status_code == 401
    assert_rate_limited(revoked.get("/api/me"))


def test_missing_credentials_are_no_attempt_and_cost_nothing(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    client = app.test_client()
    assert [client.get("/api/me").status_code for _ in range(5)] == [401] * 5
    assert client.get("/admin/rq/").status_code == 401
    assert bad_token(client).status_code == 401
    assert_rate_limited(bad_token(client))
    assert client.get("/api/me").status_code == 401  # still no attempt, so not refused as one


def test_another_address_has_its_own_budget(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    client = app.test_client()
    assert [bad_token(client).status_code for _ in range(2)] == [401, 429]
    assert bad_token(client, environ_base=OTHER_ADDRESS).status_code == 401


def test_successful_requests_never_use_the_failure_budget(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="3 per 15 minutes")
    api = signed(app)
    assert [api.get("/api/me").status_code for _ in range(10)] == [200] * 10
    assert [bad_token(api.client).status_code for _ in range(3)] == [401] * 3
    assert_rate_limited(bad_token(api.client))


def test_endpoints_without_authentication_are_never_limited(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    client = app.test_client()
    assert bad_token(client).status_code == 401
    assert_rate_limited(bad_token(client))
    for path in ("/api/openapi.json", "/api/docs", "/healthz", "/readyz", "/metrics", "/"):
        assert client.get(path).status_code == 200, path


def forwarded_for(address: str) -> dict[str, str]:
    """The header a router adds: the address it got the request from, after whatever the client sent."""
    return {"Authorization": "Bearer luca_wrong", "X-Forwarded-For": address}


def test_with_one_trusted_proxy_the_budget_follows_x_forwarded_for(app_factory) -> None:
    app = limited_app(app_factory, TRUSTED_PROXY_HOPS=1, RATE_LIMIT_AUTH_FAILURES="2 per 15 minutes")
    router = app.test_client()  # every request comes from the router's one address
    assert [router.get("/api/me", headers=forwarded_for("203.0.113.7")).status_code for _ in range(2)] == [401] * 2
    assert_rate_limited(router.get("/api/me", headers=forwarded_for("203.0.113.7")))
    # What the client wrote before the router's entry is not believed: still 203.0.113.7.
    assert_rate_limited(router.get("/api/me", headers=forwarded_for("198.51.100.1, 203.0.113.7")))
    # A second client behind the same router is not limited.
    assert router.get("/api/me", headers=forwarded_for("203.0.113.8")).status_code == 401


def test_without_trusted_proxies_x_forwarded_for_is_ignored(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="2 per 15 minutes")  # TRUSTED_PROXY_HOPS=0
    client = app.test_client()
    statuses = [client.get("/api/me", headers=forwarded_for(f"203.0.113.{n}")).status_code for n in range(3)]
    assert statuses == [401, 401, 429]


def test_a_negative_trusted_proxy_hops_fails_at_start_up(app_factory) -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXY_HOPS"):
        app_factory(TRUSTED_PROXY_HOPS=-1)


def test_failed_dashboard_sign_ins_count_on_every_path_and_method(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMIT_AUTH_FAILURES="4 per 15 minutes")
    _, admin_token = create_user(app, "ops@example.com", admin=True)
    client = app.test_client()
    wrong = basic("ops@example.com", "luca_wrong")
    assert client.get("/admin/rq/0/view/jobs", headers=wrong).status_code == 401
    assert client.post("/admin/rq/queue/default/queued/empty", headers=wrong).status_code == 401
    assert client.get("/admin/rq/no/such/page", headers=wrong).status_code == 401
    assert bad_token(client).status_code == 401  # the API's failures and the dashboard's share the budget
    assert_rate_limited(client.delete("/admin/rq/job/x/delete", headers=wrong))
    assert_rate_limited(client.get("/admin/rq/", headers=wrong))
    # The admin's own credentials from this address are still let in (no Redis here: 503).
    assert client.get("/admin/rq/", headers=basic("ops@example.com", admin_token)).status_code == 503


def test_failed_authentication_counts_are_shared_through_redis(app_factory, redis_target: RedisTarget) -> None:
    first = limited_app(app_factory, **redis_target.overrides(), RATE_LIMIT_AUTH_FAILURES="2 per 15 minutes")
    second = limited_app(app_factory, **redis_target.overrides(), RATE_LIMIT_AUTH_FAILURES="2 per 15 minutes")
    assert [bad_token(first.test_client()).status_code for _ in range(2)] == [401, 401]
    assert_rate_limited(bad_token(second.test_client()))
    keys = [key.decode() for key in redis_target.client.scan_iter(match=f"{redis_target.prefix}limits:*")]
    assert keys == [f"{redis_target.prefix}limits:LIMITER/127.0.0.1/auth-failures/2/15/minute"]


def test_limits_hold_across_processes_sharing_redis(app_factory, redis_target: RedisTarget) -> None:
    first = limited_app(app_factory, **redis_target.overrides())
    second = limited_app(app_factory, **redis_target.overrides())
    assert isinstance(limits.of(first).limiter.storage, GatewayStorage)
    alice = signed(first)
    alice_there = Api(second.test_client(), alice.token, alice.user_id)
    conversation_id = alice.new_conversation()["id"]
    assert send(alice, conversation_id, 10) == [201] * 10
    assert send(alice_there, conversation_id, 10) == [201] * 10
    assert_rate_limited(alice.ask(conversation_id, "one too many"))
    assert_rate_limited(alice_there.ask(conversation_id, "one too many"))
    keys = [key.decode() for key in redis_target.client.scan_iter(match=f"{redis_target.prefix}limits:*")]
    assert keys == [f"{redis_target.prefix}limits:LIMITER/user:{alice.user_id}/messages/20/1/minute"]


def test_apps_without_redis_keep_their_own_counts(app_factory) -> None:
    first = limited_app(app_factory, RATE_LIMIT_MESSAGES="2 per minute")
    second = limited_app(app_factory, RATE_LIMIT_MESSAGES="2 per minute")
    alice = signed(first)
    conversation_id = alice.new_conversation()["id"]
    assert send(alice, conversation_id, 3) == [201, 201, 429]
    assert send(Api(second.test_client(), alice.token, alice.user_id), conversation_id, 1) == [201]


def test_unreachable_redis_limits_in_memory_without_errors_or_delay(app_factory) -> None:
    app = limited_app(app_factory, REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_AUTH_FAILURES="2 per 15 minutes")
    api = signed(app)
    conversation_id = api.new_conversation()["id"]
    timings, statuses = [], []
    for _ in range(20):
        started = time.perf_counter()
        statuses += send(api, conversation_id, 1)
        timings.append(time.perf_counter() - started)
    assert statuses == [201] * 20
    assert max(timings) < 2.0
    assert_rate_limited(api.ask(conversation_id, "one too many"))
    assert [bad_token(api.client).status_code for _ in range(3)] == [401, 401, 429]


def test_a_redis_that_never_answers_costs_at_most_two_timeouts(app_factory) -> None:
    with socket.socket() as silent:  # accepts connections (into its backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = limited_app(app_factory, REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                          REDIS_SOCKET_TIMEOUT=0.3)
        storage = limits.of(app).limiter.storage
        started = time.perf_counter()
        with pytest.raises(RedisError):
            storage.incr("probe", 60)
        assert time.perf_counter() - started < 1.2  # one try and one retry of 0.3 s each


def test_a_redis_outage_at_run_time_switches_to_memory(app_factory, redis_target: RedisTarget) -> None:
    app = limited_app(app_factory, **redis_target.overrides(), REDIS_BREAKER_RESET_TIMEOUT=3600.0)
    api = signed(app)
    conversation_id = api.new_conversation()["id"]
    assert send(api, conversation_id, 5) == [201] * 5
    breakers.of(app).redis.open()  # Redis is judged down: every command fails at once
    # Counted again from zero in this process's memory: 20 more pass, the next is refused.
    assert send(api, conversation_id, 20) == [201] * 20
    assert_rate_limited(api.ask(conversation_id, "one too many"))


def test_rate_limits_can_be_turned_off(app_factory) -> None:
    app = limited_app(app_factory, RATE_LIMITS_ENABLED=False, RATE_LIMIT_AUTH_FAILURES="1 per 15 minutes")
    api = signed(app)
    assert send(api, api.new_conversation()["id"], 25) == [201] * 25
    assert [bad_token(api.client).status_code for _ in range(3)] == [401] * 3
