"""Monthly budgets: the expected cost is reserved before the provider call, so concurrency cannot overrun one.

The provider's answer is fixed ("abcdefgh": the fake provider counts 3 tokens), output costs
1 USD per 1,000 tokens, input nothing, and AI_MAX_OUTPUT_TOKENS is 3: every answer then costs
exactly what it reserves, COST, and a budget of 5 x COST covers exactly five answers.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from luca import budgets
from luca.extensions import budget_ledger, db
from luca.models import utcnow
from tests.support.api import Api, http_request, new_conversation_over_http, signed
from tests.support.apps import conversation_row, provider_env, provider_overrides
from tests.support.processes import gunicorn, luca_env, wait_until
from tests.support.services import RedisTarget
from tests.support.webhook import Webhook

ANSWER = "abcdefgh"
COST = Decimal("0.003")
PRICED = {"AI_PRICES": {"primary-model": [0, 1]}, "AI_MAX_OUTPUT_TOKENS": 3, "AI_MAX_CONCURRENT_PER_USER": 0,
          "RATE_LIMITS_ENABLED": False}


@pytest.fixture(params=["memory", "redis"])
def budget_app(request, app_factory, servers) -> Flask:
    """An app on the primary provider with fixed-cost answers; its ledger in the process or in Redis.

    With Redis, jobs (titles) run inline: no RQ worker runs here.
    """
    primary, _ = servers
    primary.configure(answer=ANSWER)
    extra = ({**request.getfixturevalue("redis_target").overrides(), "DISABLE_QUEUES": True}
             if request.param == "redis" else {})
    return app_factory(**provider_overrides(primary, **PRICED, **extra))


def give_budget(app: Flask, user_id: int, amount: Decimal) -> None:
    """Give the user a monthly member budget."""
    with app.app_context():
        budgets.set_budget(("member", user_id), amount)


def stored(app: Flask, user_id: int) -> dict[str, int]:
    """The user's stored messages by role."""
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT role, count(*) FROM messages WHERE user_id = :u GROUP BY role"),
                                  {"u": user_id}).all()
    return dict(rows)


def spend(app: Flask, user_id: int) -> Decimal:
    """The user's month spend, from the database."""
    with app.app_context():
        return budgets.month_spend(("member", user_id))


def at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) for each i on threads of their own, released together; return the results in order."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def assert_over_budget(status: int, headers: dict[str, str], body: dict[str, Any], budget: Decimal) -> None:
    """A 429 budget_exceeded with Retry-After until the month ends and the budget and spend in details."""
    assert status == 429, body
    error = body["error"]
    assert error["code"] == "budget_exceeded"
    until_month_end = budgets.seconds_until_month_end(utcnow())
    assert until_month_end <= int(headers["Retry-After"]) <= until_month_end + 60  # it was refused a moment ago
    details = error["details"]
    assert Decimal(details["budget_usd"]) == budget
    assert Decimal(details["spent_usd"]) + Decimal(details["reserved_usd"]) + COST > budget


def test_twenty_concurrent_sends_against_a_budget_for_five_make_five_provider_calls(budget_app, servers) -> None:
    primary, _ = servers
    api = signed(budget_app)
    give_budget(budget_app, api.user_id, 5 * COST)
    conversations = [api.new_conversation()["id"] for _ in range(20)]
    primary.configure(latency_ms=1500)  # the five answers are in flight while the others ask

    def send(index: int) -> Any:
        return Api(budget_app.test_client(), api.token, api.user_id).ask(conversations[index], f"question {index:02d}")

    responses = at_once(20, send)
    assert sorted(r.status_code for r in responses) == [201] * 5 + [429] * 15
    for response in responses:
        if response.status_code == 429:
            assert_over_budget(429, dict(response.headers), response.get_json(), 5 * COST)
    assert primary.stats()["requests"] == 5
    assert stored(budget_app, api.user_id) == {"user": 5, "assistant": 5}  # nothing for the refused ones
    assert spend(budget_app, api.user_id) == 5 * COST


def test_a_streamed_answer_settles_when_it_ends_and_one_over_budget_stores_nothing(budget_app, servers) -> None:
    api = signed(budget_app)
    give_budget(budget_app, api.user_id, 2 * COST)
    conversation = api.new_conversation()["id"]
    assert api.ask(conversation, "first", stream=True).status_code == 200
    # Were the stream's reservation still held, the spend and it would leave no room for this one.
    assert api.ask(conversation, "second", cache=False).status_code == 201
    response = api.ask(conversation, "third", stream=True)
    assert_over_budget(response.status_code, dict(response.headers), response.get_json(), 2 * COST)
    assert stored(budget_app, api.user_id) == {"user": 2, "assistant": 2}


def test_a_retry_over_budget_is_refused(budget_app, servers) -> None:
    api = signed(budget_app)
    give_budget(budget_app, api.user_id, COST)
    conversation = api.new_conversation()["id"]
    question = api.ask(conversation, "answer me twice").get_json()["message"]
    response = api.post(f"/api/conversations/{conversation}/messages/{question['id']}/retry", json={"cache": False})
    assert response.get_json()["error"]["code"] == "budget_exceeded"
    assert stored(budget_app, api.user_id) == {"user": 1, "assistant": 1}


def test_a_deduplicated_answer_is_allowed_over_budget(budget_app, servers) -> None:
    primary, _ = servers
    alice, bob = signed(budget_app, org="Acme"), signed(budget_app, org="Acme")
    alice.ask(alice.new_conversation()["id"], "What is the VAT rate?")
    give_budget(budget_app, bob.user_id, COST / 2)  # too little for any call
    conversation = bob.new_conversation()["id"]
    assert bob.ask(conversation, "Something nobody asked").get_json()["error"]["code"] == "budget_exceeded"
    answer = bob.ask(conversation, "What is the VAT rate?").get_json()["answer"]
    assert answer["cached"] is True and Decimal(answer["cost_usd"]) == 0
    assert primary.stats()["requests"] == 1


def test_over_budget_a_title_is_made_from_the_question_without_a_provider_call(budget_app, servers) -> None:
    primary, _ = servers
    alice, bob = signed(budget_app, org="Acme"), signed(budget_app, org="Acme")
    alice.ask(alice.new_conversation()["id"], "What is the VAT rate?")
    give_budget(budget_app, bob.user_id, COST / 2)
    conversation = bob.new_conversation(title=None)["id"]
    assert bob.ask(conversation, "What is the VAT rate?").status_code == 201  # deduplicated, free
    wait_until(lambda: conversation_row(budget_app, conversation).title, 10, "a title")
    assert conversation_row(budget_app, conversation).title == "What is the VAT rate"
    assert primary.stats()["requests"] == 1


def test_a_titles_cost_counts_towards_the_month_spend(budget_app, servers) -> None:
    api = signed(budget_app)
    give_budget(budget_app, api.user_id, 10 * COST)
    conversation = api.new_conversation(title=None)["id"]
    api.ask(conversation, "What is goodwill?")
    wait_until(lambda: conversation_row(budget_app, conversation).title_cost_usd, 10, "the title's cost")
    assert spend(budget_app, api.user_id) == 2 * COST  # the answer and the title


def test_when_the_month_rolls_over_the_budget_is_available_again(budget_app, servers) -> None:
    api = signed(budget_app)
    give_budget(budget_app, api.user_id, 2 * COST)
    conversation = api.new_conversation()["id"]
    assert [api.ask(conversation, q, cache=False).status_code for q in ("one", "two", "three")] == [201, 201, 429]
    with budget_app.app_context():  # a month passes: the spend is last month's
        db.session.execute(sa.text("UPDATE messages SET created_at = created_at - interval '32 days'")
                           if db.engine.dialect.name == "postgresql" else
                           sa.text("UPDATE messages SET created_at = datetime(created_at, '-32 days')"))
        db.session.commit()
    assert spend(budget_app, api.user_id) == 0
    assert api.ask(conversation, "four", cache=False).status_code == 201


@pytest.mark.sqlite_only
def test_a_budget_must_be_a_known_holder_and_amount(app) -> None:
    with app.app_context():
        for holder, amount in ((("team", 1), Decimal(1)), (("member", 1), Decimal(-1)),
                               (("member", 1), Decimal("1e9"))):
            with pytest.raises(ValueError):
                budgets.set_budget(holder, amount)


def test_the_month_is_the_utc_calendar_month() -> None:
    assert budgets.month_bounds(datetime(2026, 12, 31, 23, 59, 59)) == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert budgets.month_bounds(datetime(2027, 2, 1)) == (datetime(2027, 2, 1), datetime(2027, 3, 1))
    assert budgets.seconds_until_month_end(datetime(2026, 12, 31, 23, 59, 59)) == 1
    assert budgets.seconds_until_month_end(datetime(2026, 11, 30, 12)) == 12 * 3600


def test_the_80_and_100_percent_alerts_reach_the_webhook_once_each(app_factory, servers) -> None:
    primary, _ = servers
    primary.configure(answer=ANSWER)
    hook = Webhook()
    try:
        app = app_factory(**provider_overrides(primary, **PRICED, ALERT_WEBHOOK_URL=hook.url))
        api = signed(app)
        give_budget(app, api.user_id, 5 * COST)
        conversation = api.new_conversation()["id"]
        statuses = [api.ask(conversation, f"q{i}", cache=False).status_code for i in range(7)]
        assert statuses == [201] * 5 + [429] * 2
        hook.wait_for(2)
        time.sleep(0.3)  # a third post would have arrived by now
        assert [(p["alert"]["name"], p["alert"]["threshold"]) for p in hook.posts] == \
            [("budget_80", float(5 * COST)), ("budget_100", float(5 * COST))]
        assert f"member {api.user_id}" in hook.posts[0]["text"]
    finally:
        hook.close()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_reservation_of_a_process_that_died_expires(app_factory, request, where: str) -> None:
    extra = request.getfixturevalue("redis_target").overrides() if where == "redis" else {}
    app = app_factory(BUDGET_RESERVATION_SECONDS=0.5, **extra)
    with app.app_context():
        ledger = budget_ledger.of()
        key = ledger.key(("member", 1), "2026-12")
        assert ledger.take(key, "died", 10, 10, ledger.note(key)) == (True, 0, where == "redis")
        assert ledger.take(key, "next", 1, 10, ledger.note(key))[:2] == (False, 10)  # never settled
        time.sleep(0.6)
        assert ledger.take(key, "next", 1, 10, ledger.note(key))[:2] == (True, 0)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_settled_cost_counts_for_reads_of_the_spend_that_began_before_it(app_factory, request, where: str) -> None:
    extra = request.getfixturevalue("redis_target").overrides() if where == "redis" else {}
    app = app_factory(**extra)
    with app.app_context():
        ledger = budget_ledger.of()
        key = ledger.key(("member", 1), "2026-12")
        noted_before = ledger.note(key)
        assert ledger.take(key, "a", 5, 10, noted_before)[0]
        ledger.settle(key, "a", 5, where == "redis")
        # A read that began before the settle may have missed the answer's commit: its cost still counts.
        assert ledger.take(key, "b", 6, 10, noted_before)[:2] == (False, 5)
        # A read that began after it saw the commit: the database counts it, the ledger no longer does.
        assert ledger.take(key, "c", 6, 10, ledger.note(key))[:2] == (True, 0)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_twenty_concurrent_sends_across_gunicorn_workers_sharing_redis_make_five_calls(
        app_factory, database_url: str, redis_target: RedisTarget, servers, tmp_path: Path) -> None:
    primary, _ = servers
    primary.configure(answer=ANSWER)
    app = app_factory(**provider_overrides(primary, **PRICED, **redis_target.overrides()))
    api = signed(app)
    give_budget(app, api.user_id, 5 * COST)
    env = luca_env(DATABASE_URL=database_url, **provider_env(primary), REDIS_URL=redis_target.url,
                   REDIS_KEY_PREFIX=redis_target.prefix, QUEUE_PREFIX=f"{redis_target.prefix}q-",
                   AI_PRICES=json.dumps(PRICED["AI_PRICES"]), AI_MAX_OUTPUT_TOKENS="3",
                   AI_MAX_CONCURRENT_PER_USER="0", RATE_LIMITS_ENABLED="false",
                   WEB_CONCURRENCY="2", GUNICORN_THREADS="12")
    with gunicorn(env) as (base, _server):
        conversations = [new_conversation_over_http(base, api.token) for _ in range(20)]
        primary.configure(latency_ms=2000)

        def send(index: int) -> tuple[int, dict[str, str], bytes]:
            return http_request(base, "POST", f"/api/conversations/{conversations[index]}/messages", api.token,
                                {"content": f"question {index:02d}"})

        replies = at_once(20, send)
    assert sorted(status for status, _, _ in replies) == [201] * 5 + [429] * 15
    for status, headers, body in replies:
        if status == 429:
            assert_over_budget(status, headers, json.loads(body), 5 * COST)
    assert primary.stats()["requests"] == 5
    assert stored(app, api.user_id) == {"user": 5, "assistant": 5}
    assert spend(app, api.user_id) == 5 * COST
    ledger = redis_target.client.hgetall(f"{redis_target.prefix}budget:member:{api.user_id}:{utcnow():%Y-%m}")
    assert not [name for name in ledger if name.startswith(b"r:")]  # every reservation settled


# -- organisations: a budget for every member together, set by its owners and admins ----------------------------
def org_budget(owner: Api, amount: Any) -> Any:
    """PATCH /api/org with a monthly budget, as the organisation's owner."""
    return owner.patch("/api/org", json={"monthly_budget_usd": amount})


def test_twenty_concurrent_sends_of_an_organisation_s_members_against_its_budget_for_five(budget_app, servers) -> None:
    primary, _ = servers
    members = [signed(budget_app, org="Acme") for _ in range(4)]
    assert org_budget(members[0], str(5 * COST)).status_code == 200
    conversations = [members[i % 4].new_conversation()["id"] for i in range(20)]
    primary.configure(latency_ms=1500)

    def send(index: int) -> Any:
        member = members[index % 4]
        return Api(budget_app.test_client(), member.token, member.user_id).ask(conversations[index], f"q {index:02d}")

    responses = at_once(20, send)
    assert sorted(r.status_code for r in responses) == [201] * 5 + [429] * 15
    refused = [r.get_json()["error"] for r in responses if r.status_code == 429]
    assert {e["details"]["holder"] for e in refused} == {"org"} and "organisation's" in refused[0]["message"]
    assert primary.stats()["requests"] == 5
    assert sum(stored(budget_app, m.user_id).get("assistant", 0) for m in members) == 5
    with budget_app.app_context():
        org_id = db.session.execute(sa.text("SELECT organisation_id FROM memberships WHERE user_id = :u"),
                                    {"u": members[0].user_id}).scalar_one()
        assert budgets.month_spend(("org", org_id)) == 5 * COST


def test_a_send_must_fit_both_the_member_s_and_the_organisation_s_budget(budget_app, servers) -> None:
    owner, staff = signed(budget_app, org="Acme"), signed(budget_app, org="Acme")
    org_budget(owner, str(3 * COST))
    assert owner.patch(f"/api/org/members/{staff.user_id}", json={"monthly_budget_usd": str(COST)}).status_code == 200
    mine, theirs = owner.new_conversation()["id"], staff.new_conversation()["id"]
    assert staff.ask(theirs, "one", cache=False).status_code == 201
    refused = staff.ask(theirs, "two", cache=False).get_json()["error"]
    assert (refused["code"], refused["details"]["holder"]) == ("budget_exceeded", "member")  # theirs is spent
    assert [owner.ask(mine, q, cache=False).status_code for q in ("a", "b", "c")] == [201, 201, 429]
    assert owner.ask(mine, "d", cache=False).get_json()["error"]["details"]["holder"] == "org"


def test_another_organisation_s_budget_is_not_yours(budget_app, servers) -> None:
    acme, globex = signed(budget_app, org="Acme"), signed(budget_app, org="Globex")
    org_budget(acme, "0")
    assert globex.ask(globex.new_conversation()["id"], "free to ask").status_code == 201
    assert acme.ask(acme.new_conversation()["id"], "not me").status_code == 429


def test_the_80_and_100_percent_alerts_of_an_organisation_reach_the_webhook_once_each(app_factory, servers) -> None:
    primary, _ = servers
    primary.configure(answer=ANSWER)
    hook = Webhook()
    try:
        app = app_factory(**provider_overrides(primary, **PRICED, ALERT_WEBHOOK_URL=hook.url))
        alice, bob = signed(app, org="Acme"), signed(app, org="Acme")
        org_budget(alice, str(5 * COST))
        asking = [(alice, alice.new_conversation()["id"]), (bob, bob.new_conversation()["id"])] * 4
        statuses = [api.ask(conversation, f"q{i}", cache=False).status_code
                    for i, (api, conversation) in enumerate(asking)]
        assert statuses == [201] * 5 + [429] * 3
        hook.wait_for(2)
        time.sleep(0.3)  # a third post would have arrived by now
        assert [(p["alert"]["name"], p["alert"]["threshold"]) for p in hook.posts] == \
            [("budget_80", float(5 * COST)), ("budget_100", float(5 * COST))]
        org_id = alice.get("/api/org").get_json()["id"]
        assert all(f"organisation {org_id} has spent" in p["text"] for p in hook.posts)
    finally:
        hook.close()


@pytest.mark.sqlite_only
def test_org_owners_and_admins_set_budgets_that_show_in_the_org_and_its_members(app) -> None:
    owner, staff = signed(app, org="Acme"), signed(app, org="Acme")
    org = org_budget(owner, "250.5").get_json()
    assert (org["monthly_budget_usd"], org["month_spent_usd"], org["name"]) == ("250.5", "0", "Acme")
    assert staff.get("/api/org").get_json()["monthly_budget_usd"] == "250.5"  # members see it too
    member = owner.patch(f"/api/org/members/{staff.user_id}", json={"monthly_budget_usd": 20}).get_json()
    assert (member["monthly_budget_usd"], member["role"]) == ("20", "member")
    own = owner.patch(f"/api/org/members/{owner.user_id}", json={"monthly_budget_usd": "5"})  # limits only them
    assert own.status_code == 200 and own.get_json()["role"] == "owner"
    listed = {m["id"]: m["monthly_budget_usd"] for m in owner.get("/api/org/members").get_json()["items"]}
    assert listed == {owner.user_id: "5", staff.user_id: "20"}
    assert org_budget(owner, None).get_json()["monthly_budget_usd"] is None  # null removes it
    assert owner.patch("/api/org", json={"name": "Acme Ltd"}).get_json()["name"] == "Acme Ltd"
    with app.app_context():
        assert db.session.execute(sa.text("SELECT holder_kind, monthly_budget_usd FROM budgets")).all() \
            and budgets.budgets_of([("member", staff.user_id)]) == {("member", staff.user_id): Decimal(20)}


@pytest.mark.sqlite_only
def test_only_owners_and_admins_of_the_organisation_set_its_budgets(app) -> None:
    owner, staff, stranger = signed(app, org="Acme"), signed(app, org="Acme"), signed(app, org="Globex")
    assert org_budget(staff, "10").status_code == 403
    assert staff.patch(f"/api/org/members/{staff.user_id}", json={"monthly_budget_usd": "10"}).status_code == 403
    assert stranger.patch(f"/api/org/members/{staff.user_id}", json={"monthly_budget_usd": "0"}).status_code == 404
    assert owner.get("/api/org").get_json()["monthly_budget_usd"] is None
    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM budgets")).scalar_one() == 0


@pytest.mark.sqlite_only
@pytest.mark.parametrize("amount", [-1, "-0.01", "abc", True, [1], {"usd": 1}, 1e8, "100000000", "NaN", "Infinity",
                                    "0.00000000001", ""])
@pytest.mark.parametrize("where", ["org", "member"])
def test_a_bad_budget_amount_is_a_422_naming_the_field(app, amount: Any, where: str) -> None:
    owner, staff = signed(app, org="Acme"), signed(app, org="Acme")
    path = "/api/org" if where == "org" else f"/api/org/members/{staff.user_id}"
    response = owner.patch(path, json={"monthly_budget_usd": amount})
    assert response.status_code == 422, response.get_json()
    assert [d["field"] for d in response.get_json()["error"]["details"]] == ["monthly_budget_usd"]
    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM budgets")).scalar_one() == 0


@pytest.mark.sqlite_only
def test_a_name_or_role_of_null_is_a_422_naming_the_field(app) -> None:
    owner, staff = signed(app, org="Acme"), signed(app, org="Acme")
    for path, field in (("/api/org", "name"), (f"/api/org/members/{staff.user_id}", "role")):
        response = owner.patch(path, json={field: None, "monthly_budget_usd": "1"})
        assert response.status_code == 422 and response.get_json()["error"]["details"][0]["field"] == field
    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM budgets")).scalar_one() == 0
