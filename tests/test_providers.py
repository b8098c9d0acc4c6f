"""Real providers over HTTP (the local test servers): fallback, breakers, 503 and retry, context."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from flask import Flask

from luca.extensions import breakers
from tests.support.api import Api, signed
from tests.support.apps import provider_overrides
from tests.support.services import RedisTarget


@pytest.fixture
def chain_app(app_factory, servers) -> Flask:
    """An app whose providers are primary then backup; breakers open after 3 failures for 1 s."""
    primary, backup = servers
    return app_factory(**provider_overrides(primary, backup, AI_BREAKER_FAIL_MAX=3, AI_BREAKER_RESET_TIMEOUT=1.0))


def breaker_state(app: Flask, provider: str) -> str:
    """The state of AI-<provider> as app sees it."""
    with app.app_context():
        return breakers.ai(provider).current_state


def test_the_first_provider_answers_and_is_recorded(chain_app, servers) -> None:
    primary, backup = servers
    api = signed(chain_app)
    conversation = api.new_conversation()
    answer = api.ask(conversation["id"], "What is deferred tax?").get_json()["answer"]
    assert answer["provider"] == "primary" and answer["model"] == "primary-model"
    assert answer["content"].startswith("[primary]")
    assert answer["tokens_in"] > 0 and answer["tokens_out"] > 0 and answer["latency_ms"] >= 0
    assert backup.stats()["requests"] == 0


def test_the_provider_gets_the_system_prompt_and_recent_context(chain_app, servers) -> None:
    primary, _ = servers
    api = signed(chain_app)
    conversation = api.new_conversation()
    api.ask(conversation["id"], "First question about VAT")
    api.ask(conversation["id"], "And the follow-up?")
    sent = primary.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and "accounting" in sent[0]["content"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["First question about VAT", "And the follow-up?"]
    assert sent[2]["role"] == "assistant"


def test_context_stays_within_the_token_budget(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, AI_CONTEXT_TOKENS=400))
    api = signed(app)
    conversation = api.new_conversation()
    for i in range(6):
        api.ask(conversation["id"], f"question {i} " + "padding " * 60)
    sent = primary.requests[-1]["messages"]
    assert sent[-1]["content"].startswith("question 5")
    assert sum(len(m["content"]) for m in sent) // 4 <= 400 + 200  # the newest question always fits
    assert not any(m["content"].startswith("question 0") for m in sent)


def test_concurrent_messages_through_one_provider_overlap(chain_app, servers) -> None:
    primary, _ = servers
    # Long enough that all eight are in flight together even on a loaded machine; a breaker that
    # serialised calls would show one at a time whatever the latency.
    primary.configure(latency_ms=1500)
    # Eight users: one user may have only AI_MAX_CONCURRENT_PER_USER (3) answers in flight.
    users = [signed(chain_app, f"user{i}@example.com") for i in range(8)]
    conversations = [(api, api.new_conversation()["id"]) for api in users]
    statuses: list[int] = []
    start = threading.Barrier(len(conversations))

    def send(api: Api, conversation_id: str) -> None:
        client = chain_app.test_client()
        start.wait()
        response = client.post(f"/api/conversations/{conversation_id}/messages",
                               json={"content": f"question for {conversation_id}"}, headers=api.headers())
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=pair) for pair in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 8
    assert primary.stats()["max_active"] == 8


def test_failing_provider_opens_its_breaker_and_is_skipped_then_recovers(chain_app, servers, caplog) -> None:
    primary, backup = servers
    primary.configure(status=500)
    api = signed(chain_app)
    conversation = api.new_conversation()
    with caplog.at_level(logging.INFO, logger="luca.breakers"):
        for _ in range(3):
            answer = api.ask(conversation["id"], "hello").get_json()["answer"]
            assert answer["provider"] == "backup"
        assert breaker_state(chain_app, "primary") == "open"
        assert primary.stats()["requests"] == 3

        for _ in range(3):
            assert api.ask(conversation["id"], "still there?").get_json()["answer"]["provider"] == "backup"
        assert primary.stats()["requests"] == 3  # never touched while open

        primary.configure(status=None)
        time.sleep(1.1)
        answer = api.ask(conversation["id"], "back?").get_json()["answer"]
    assert answer["provider"] == "primary"
    assert primary.stats()["requests"] == 4
    assert breaker_state(chain_app, "primary") == "closed"
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("[CircuitBreaker] AI-primary OPEN") for line in lines)
    assert "[CircuitBreaker] AI-primary CLOSED - service recovered" in lines


def test_a_400_from_a_provider_does_not_count_against_its_breaker(chain_app, servers) -> None:
    primary, _ = servers
    primary.configure(status=400)
    api = signed(chain_app)
    conversation = api.new_conversation()
    for _ in range(5):
        assert api.ask(conversation["id"], "hi").get_json()["answer"]["provider"] == "backup"
    assert breaker_state(chain_app, "primary") == "closed"
    assert primary.stats()["requests"] == 5


@pytest.mark.parametrize("setting", [{"status": 401}, {"status": 429}, {"hang_s": 3}, {"drop": True}])
def test_unusable_key_rate_limits_timeouts_and_drops_count_as_failures(app_factory, servers, setting) -> None:
    primary, backup = servers
    app = app_factory(**provider_overrides(primary, backup, AI_BREAKER_FAIL_MAX=2, AI_TIMEOUT=0.5))
    primary.configure(**setting)
    api = signed(app)
    conversation = api.new_conversation()
    for _ in range(2):
        assert api.ask(conversation["id"], "hi").get_json()["answer"]["provider"] == "backup"
    assert breaker_state(app, "primary") == "open"


def test_a_breaker_opened_in_one_instance_is_open_in_the_other(app_factory, servers, redis_target: RedisTarget) -> None:
    primary, backup = servers
    settings = provider_overrides(primary, backup, AI_BREAKER_FAIL_MAX=2, AI_BREAKER_RESET_TIMEOUT=60,
                                  **redis_target.overrides())
    first, second = app_factory(**settings), app_factory(**settings)
    primary.configure(status=503)
    api = signed(first)
    conversation = api.new_conversation()
    for _ in range(2):
        api.ask(conversation["id"], "hi")
    assert breaker_state(first, "primary") == "open"
    assert breaker_state(second, "primary") == "open"

    other = Api(second.test_client(), api.token, api.user_id)
    before = primary.stats()["requests"]
    assert other.ask(conversation["id"], "from the other process").get_json()["answer"]["provider"] == "backup"
    assert primary.stats()["requests"] == before
    assert redis_target.client.get(f"{redis_target.prefix}breaker:AI-primary:pybreaker:state") == b"open"


def test_breakers_keep_working_in_process_when_redis_is_unreachable(app_factory, servers) -> None:
    primary, backup = servers
    app = app_factory(**provider_overrides(primary, backup, AI_BREAKER_FAIL_MAX=2,
                                           REDIS_URL="redis://127.0.0.1:1/0", REDIS_KEY_PREFIX="luca-test:"))
    primary.configure(status=500)
    api = signed(app)
    conversation = api.new_conversation()
    for _ in range(3):
        assert api.ask(conversation["id"], "hi").get_json()["answer"]["provider"] == "backup"
    assert breaker_state(app, "primary") == "open"
    assert primary.stats()["requests"] == 2


def test_all_providers_down_is_503_with_retry_after_and_the_question_is_kept(chain_app, servers) -> None:
    primary, backup = servers
    primary.configure(status=500)
    backup.configure(status=500)
    api = signed(chain_app)
    conversation = api.new_conversation()
    response = api.ask(conversation["id"], "Will this be kept?")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "providers_unavailable"
    message_id = error["details"]["message_id"]
    items = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"]
    assert [(m["id"], m["role"], m["content"]) for m in items] == [(message_id, "user", "Will this be kept?")]

    backup.configure(status=None)
    retried = api.post(f"/api/conversations/{conversation['id']}/messages/{message_id}/retry")
    assert retried.status_code == 201, retried.get_json()
    body = retried.get_json()
    assert body["message"]["id"] == message_id
    assert body["answer"]["provider"] == "backup"
    assert "Will this be kept?" in body["answer"]["content"]


def test_retry_after_counts_down_to_the_first_half_open(chain_app, servers) -> None:
    primary, backup = servers
    chain_app.config["AI_BREAKER_RESET_TIMEOUT"] = 30
    primary.configure(status=500)
    backup.configure(status=500)
    api = signed(chain_app)
    conversation = api.new_conversation()
    for _ in range(3):
        api.ask(conversation["id"], "hi")
    response = api.ask(conversation["id"], "hi again")
    assert response.status_code == 503
    assert 20 <= int(response.headers["Retry-After"]) <= 30


def test_retry_of_an_unknown_or_foreign_question_is_404(chain_app, servers) -> None:
    api = signed(chain_app)
    other = signed(chain_app, "bob@example.com")
    conversation = api.new_conversation()
    answer = api.ask(conversation["id"], "hi").get_json()["answer"]
    path = f"/api/conversations/{conversation['id']}/messages"
    assert api.post(f"{path}/{answer['id']}/retry").status_code == 404  # an answer is not a question
    assert api.post(f"{path}/999999/retry").status_code == 404
    question_id = answer["id"] - 1
    assert other.post(f"{path}/{question_id}/retry").status_code == 404


def test_circuit_breaker_stats_cover_every_breaker(chain_app, servers) -> None:
    primary, _ = servers
    primary.configure(status=500)
    api = signed(chain_app)
    conversation = api.new_conversation()
    for _ in range(3):
        api.ask(conversation["id"], "hi")
    with chain_app.app_context():
        stats = breakers.stats()
    assert set(stats) >= {"database", "externalAPI", "aiProviders"}
    assert stats["aiProviders"]["AI-primary"]["state"] == "open"
    primary_stats: dict[str, Any] = stats["aiProviders"]["AI-primary"]["stats"]
    assert primary_stats["failures"] == 3 and primary_stats["openedAt"]
    assert "InternalServerError" in primary_stats["lastFailure"]
    assert stats["aiProviders"]["AI-backup"]["state"] == "closed"
    assert stats["database"]["state"] == "closed"
