"""AI answer deduplication: one provider call per identical context, never across users' private data."""
from __future__ import annotations

import threading

import pytest
from flask import Flask

from luca.ai.base import Provider
from luca.ai.dedup import answer_key
from luca.ai.offline import OfflineProvider
from luca.extensions import cache
from tests.support.api import Api, signed
from tests.support.apps import provider_overrides
from tests.support.services import RedisTarget
from tests.support.sse import parse_events


def colleague(app: Flask, email: str) -> Api:
    """A signed client for a new user of the one organisation these tests share answers in."""
    return signed(app, email, org="Firm")


@pytest.fixture(params=["memory", "redis"])
def dedup_app(request, app_factory, servers) -> Flask:
    """An app on the primary test provider, its cache in memory or in Redis."""
    primary, _ = servers
    extra = request.getfixturevalue("redis_target").overrides() if request.param == "redis" else {}
    return app_factory(**provider_overrides(primary, **extra))


def test_two_users_asking_the_same_first_question_make_one_provider_call(dedup_app, servers) -> None:
    primary, _ = servers
    alice, bob = colleague(dedup_app, "alice@example.com"), colleague(dedup_app, "bob@example.com")
    first = alice.ask(alice.new_conversation()["id"], "What is the corporate tax rate?").get_json()["answer"]
    second = bob.ask(bob.new_conversation()["id"], "What is the corporate tax rate?").get_json()["answer"]
    assert primary.stats()["requests"] == 1
    assert first["cached"] is False and second["cached"] is True
    assert (second["provider"], second["model"], second["content"]) == \
        (first["provider"], first["model"], first["content"])
    with dedup_app.app_context():
        assert cache.get_stats()["dedup"]["savedCalls"] == 1


def test_the_same_first_question_in_two_organisations_makes_two_provider_calls(dedup_app, servers) -> None:
    primary, _ = servers
    alice, bob = signed(dedup_app, "alice@one.example"), signed(dedup_app, "bob@two.example")
    alice.ask(alice.new_conversation()["id"], "What is the corporate tax rate?")
    second = bob.ask(bob.new_conversation()["id"], "What is the corporate tax rate?").get_json()["answer"]
    assert primary.stats()["requests"] == 2 and second["cached"] is False


def test_the_same_follow_up_in_two_users_conversations_makes_two_calls(dedup_app, servers) -> None:
    primary, _ = servers
    for email in ("alice@example.com", "bob@example.com"):
        api = colleague(dedup_app, email)
        conversation = api.new_conversation()["id"]
        api.ask(conversation, "What is VAT?")
        assert api.ask(conversation, "And how do I register?").get_json()["answer"]["cached"] is False
    assert primary.stats()["requests"] == 3  # the shared first question once, then one follow-up each


def test_a_follow_up_repeated_by_the_same_user_in_the_same_context_is_reused(dedup_app, servers) -> None:
    primary, _ = servers
    api = colleague(dedup_app, "alice@example.com")
    conversation = api.new_conversation()["id"]
    question = api.ask(conversation, "Explain accruals").get_json()["message"]
    api.post(f"/api/conversations/{conversation}/messages/{question['id']}/retry")
    assert primary.stats()["requests"] == 1


def test_questions_that_share_their_first_hundred_characters_are_different(dedup_app, servers) -> None:
    primary, _ = servers
    alice, bob = colleague(dedup_app, "alice@example.com"), colleague(dedup_app, "bob@example.com")
    stem = "I run a small bakery in Lyon with two employees and I would like to understand my obligations " * 2
    a = alice.ask(alice.new_conversation()["id"], stem + "for VAT").get_json()["answer"]
    b = bob.ask(bob.new_conversation()["id"], stem + "for payroll").get_json()["answer"]
    assert primary.stats()["requests"] == 2
    assert b["cached"] is False and a["content"] != b["content"]


@pytest.mark.parametrize("opt_out", ["body", "header"])
def test_the_client_can_skip_the_answer_cache(dedup_app, servers, opt_out: str) -> None:
    primary, _ = servers
    alice, bob = colleague(dedup_app, "alice@example.com"), colleague(dedup_app, "bob@example.com")
    alice.ask(alice.new_conversation()["id"], "What is goodwill?")
    conversation = bob.new_conversation()["id"]
    if opt_out == "body":
        response = bob.ask(conversation, "What is goodwill?", cache=False)
    else:
        response = bob.post(f"/api/conversations/{conversation}/messages", json={"content": "What is goodwill?"},
                            headers={"Cache-Control": "no-cache"})
    assert response.get_json()["answer"]["cached"] is False
    assert primary.stats()["requests"] == 2


def test_disable_cache_turns_deduplication_off(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_CACHE=True))
    for email in ("alice@example.com", "bob@example.com"):
        api = colleague(app, email)
        api.ask(api.new_conversation()["id"], "What is the corporate tax rate?")
    assert primary.stats()["requests"] == 2


def test_twenty_concurrent_identical_requests_make_exactly_one_provider_call(dedup_app, servers) -> None:
    primary, _ = servers
    primary.configure(latency_ms=300)
    users = [colleague(dedup_app, f"user{i}@example.com") for i in range(20)]
    conversations = [u.new_conversation()["id"] for u in users]
    answers: list[dict] = []
    start = threading.Barrier(20)

    def ask(api: Api, conversation: str) -> None:
        client = dedup_app.test_client()
        start.wait()
        response = client.post(f"/api/conversations/{conversation}/messages",
                               json={"content": "Is rent deductible?"}, headers=api.headers())
        answers.append(response.get_json()["answer"])

    threads = [threading.Thread(target=ask, args=pair) for pair in zip(users, conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert primary.stats()["requests"] == 1
    assert len(answers) == 20 and len({a["content"] for a in answers}) == 1
    assert sum(not a["cached"] for a in answers) == 1


def test_waiting_twins_get_the_leaders_answer_even_when_the_cache_lost_it(dedup_app, servers, monkeypatch) -> None:
    primary, _ = servers
    primary.configure(latency_ms=500)
    with dedup_app.app_context():
        service = cache.of()
    monkeypatch.setattr(service, "set", lambda *args, **kwargs: None)  # every write lost, as to a failing Redis
    users = [colleague(dedup_app, f"user{i}@example.com") for i in range(5)]
    conversations = [u.new_conversation()["id"] for u in users]
    start = threading.Barrier(len(users))
    answers: list[dict] = []

    def ask(api: Api, conversation: str) -> None:
        client = dedup_app.test_client()
        start.wait()
        response = client.post(f"/api/conversations/{conversation}/messages",
                               json={"content": "Is a gym membership deductible?"}, headers=api.headers())
        answers.append(response.get_json()["answer"])

    threads = [threading.Thread(target=ask, args=pair) for pair in zip(users, conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert primary.stats()["requests"] == 1
    assert sum(not a["cached"] for a in answers) == 1


def test_concurrent_identical_requests_in_two_processes_make_one_call(app_factory, servers,
                                                                      redis_target: RedisTarget) -> None:
    primary, _ = servers
    primary.configure(latency_ms=300)
    apps = [app_factory(**provider_overrides(primary, **redis_target.overrides())) for _ in range(2)]
    users = [colleague(apps[0], f"user{i}@example.com") for i in range(10)]
    jobs = [(apps[i % 2], u, u.new_conversation()["id"]) for i, u in enumerate(users)]
    start = threading.Barrier(len(jobs))
    statuses: list[int] = []

    def ask(app: Flask, api: Api, conversation: str) -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post(f"/api/conversations/{conversation}/messages",
                                    json={"content": "Can I expense a laptop?"}, headers=api.headers()).status_code)

    threads = [threading.Thread(target=ask, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 10
    assert primary.stats()["requests"] == 1


def test_a_streamed_repeat_is_replayed_from_the_cache(dedup_app, servers) -> None:
    primary, _ = servers
    alice, bob = colleague(dedup_app, "alice@example.com"), colleague(dedup_app, "bob@example.com")
    first = parse_events(alice.ask(alice.new_conversation()["id"], "What is EBITDA?", stream=True)
                         .get_data(as_text=True))
    second = parse_events(bob.ask(bob.new_conversation()["id"], "What is EBITDA?", stream=True)
                          .get_data(as_text=True))
    assert primary.stats()["requests"] == 1
    assert second[0][1]["cached"] is True
    assert second[-1][1]["message"]["cached"] is True
    assert second[-1][1]["message"]["content"] == first[-1][1]["message"]["content"]


def test_two_concurrent_streamed_twins_of_one_user_make_one_provider_call(dedup_app, servers, monkeypatch) -> None:
    primary, _ = servers
    primary.configure(latency_ms=300)
    with dedup_app.app_context():
        service = cache.of()
    # Every cache write lost (as to a failing Redis): the twin can only get the answer the leader hands its
    # flight, which it can only do while the flight is open, i.e. if it stores the answer before finishing.
    monkeypatch.setattr(service, "set", lambda *args, **kwargs: None)
    api = signed(dedup_app, "alice@example.com")
    conversations = [api.new_conversation()["id"] for _ in range(2)]
    start = threading.Barrier(2)
    streams: list[list[tuple[str, dict]]] = []

    def ask(conversation: str) -> None:
        client = dedup_app.test_client()
        start.wait()
        response = client.post(f"/api/conversations/{conversation}/messages",
                               json={"content": "What is a trial balance?", "stream": True}, headers=api.headers())
        streams.append(parse_events(response.get_data(as_text=True)))

    threads = [threading.Thread(target=ask, args=(c,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert primary.stats()["requests"] == 1  # the twin woke to the leader's stored answer
    assert [events[-1][0] for events in streams] == ["end", "end"]
    assert sorted(events[-1][1]["message"]["cached"] for events in streams) == [False, True]
    assert streams[0][-1][1]["message"]["content"] == streams[1][-1][1]["message"]["content"]


def test_a_failed_leader_lets_the_next_request_call_the_provider(dedup_app, servers) -> None:
    primary, _ = servers
    primary.configure(fail_next=1, fail_status=500)
    alice, bob = colleague(dedup_app, "alice@example.com"), colleague(dedup_app, "bob@example.com")
    assert alice.ask(alice.new_conversation()["id"], "What is a ledger?").status_code == 503
    answer = bob.ask(bob.new_conversation()["id"], "What is a ledger?").get_json()["answer"]
    assert answer["cached"] is False and primary.stats()["requests"] == 2


ROUTE: list[Provider] = [OfflineProvider()]
SYSTEM = {"role": "system", "content": "You are Luca."}


def test_a_first_question_without_files_is_shared_within_its_organisation_only() -> None:
    context = [SYSTEM, {"role": "user", "content": "What is VAT?"}]
    assert answer_key(ROUTE, context, 1, scope="org7") == answer_key(ROUTE, context, 2, scope="org7")
    assert ":org7:" in answer_key(ROUTE, context, 1, scope="org7")
    assert answer_key(ROUTE, context, 1, scope="org7") != answer_key(ROUTE, context, 2, scope="org8")


def test_a_question_with_files_is_never_shared() -> None:
    context = [SYSTEM, {"role": "user", "content": "Summarise my file"}]
    mine, theirs = answer_key(ROUTE, context, 1, ["abc"]), answer_key(ROUTE, context, 2, ["abc"])
    assert mine != theirs and ":user1:" in mine


def test_a_follow_up_is_scoped_to_its_user() -> None:
    context = [SYSTEM, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
               {"role": "user", "content": "c"}]
    assert answer_key(ROUTE, context, 1) != answer_key(ROUTE, context, 2)


def test_the_key_depends_on_the_route_system_prompt_and_file_contents() -> None:
    context = [SYSTEM, {"role": "user", "content": "q"}]
    other_prompt = [{"role": "system", "content": "You are someone else."}, {"role": "user", "content": "q"}]
    base = answer_key(ROUTE, context, 1)
    assert answer_key(ROUTE, other_prompt, 1) != base
    assert answer_key([], context, 1) != base
    assert answer_key(ROUTE, context, 1, ["file-a"]) != answer_key(ROUTE, context, 1, ["file-b"])
