"""The OpenAI-compatible API (/v1) driven by real OpenAI clients over real HTTP: the official SDK and LiteLLM.

Luca runs in a thread (tests.support.apps.serving) in front of the two fake providers,
"primary" then "backup"; the SDK and LiteLLM need a real base URL.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from flask import Flask

from luca import budgets
from luca.ai.context import SYSTEM_PROMPT
from luca.ai.dedup import answer_key, sharing_scope
from luca.ai.offline import OfflineProvider
from luca.extensions import db
from luca.models import utcnow
from tests.support.api import Api, signed
from tests.support.apps import provider_overrides, serving
from tests.support.litellm_venv import litellm_completion

QUESTION = [{"role": "user", "content": "What is VAT?"}]


@dataclass
class Luca:
    """Luca served over HTTP, its app and its providers."""

    app: Flask
    base: str
    primary: Any
    backup: Any

    @contextmanager
    def sdk(self, user: Api | None = None, **options: Any) -> Iterator[openai.OpenAI]:
        """The official openai SDK pointed at Luca with a user's token (a new user unless given), no retries."""
        user = user or signed(self.app)
        with openai.OpenAI(base_url=f"{self.base}/v1", api_key=user.token, max_retries=0, **options) as client:
            yield client


def luca_for(app_factory: Callable[..., Flask], servers: Any, **settings: Any) -> Iterator[Luca]:
    """Luca on both fake providers with settings, served for the test."""
    primary, backup = servers
    app = app_factory(**provider_overrides(primary, backup, **settings))
    with serving(app) as base:
        yield Luca(app, base, primary, backup)


@pytest.fixture
def luca(app_factory, servers) -> Iterator[Luca]:
    """Luca in front of primary and backup, served over HTTP."""
    yield from luca_for(app_factory, servers)


@pytest.mark.sqlite_only
def test_the_sdk_gets_a_whole_answer_with_usage(luca: Luca) -> None:
    with luca.sdk() as client:
        completion = client.chat.completions.create(model="luca", messages=QUESTION)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "[primary] You asked: What is VAT?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "primary/primary-model"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    sent = luca.primary.requests[-1]["messages"]
    assert sent == [{"role": "system", "content": SYSTEM_PROMPT}, *QUESTION]


@pytest.mark.sqlite_only
def test_a_streamed_answer_arrives_in_order_and_ends_with_usage(luca: Luca) -> None:
    question = [{"role": "user", "content": "Explain accruals and prepayments in two sentences"}]
    with luca.sdk() as client:
        chunks = list(client.chat.completions.create(model="luca", messages=question, stream=True,
                                                     stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == "[primary] You asked: Explain accruals and prepayments in two sentences"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert {c.model for c in chunks} == {"primary/primary-model"}


@pytest.mark.sqlite_only
def test_without_include_usage_no_usage_chunk_is_sent(luca: Luca) -> None:
    with luca.sdk() as client:
        chunks = list(client.chat.completions.create(model="luca", messages=QUESTION, stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.sqlite_only
def test_models_are_the_chain_and_each_provider_alone(luca: Luca) -> None:
    with luca.sdk() as client:
        ids = [m.id for m in client.models.list()]
        assert client.models.retrieve("backup/backup-model").owned_by == "backup"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nobody/nothing")
    assert ids == ["luca", "primary/primary-model", "backup/backup-model"]


@pytest.mark.sqlite_only
def test_an_invalid_key_raises_authentication_error(luca: Luca) -> None:
    with openai.OpenAI(base_url=f"{luca.base}/v1", api_key="luca_not-a-token", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="luca", messages=QUESTION)
    assert raised.value.status_code == 401
    assert raised.value.body == {"message": "the API token is not valid or was revoked",
                                 "type": "authentication_error", "code": "invalid_api_key", "param": None}
    assert luca.primary.stats()["requests"] == 0


@pytest.mark.slow
@pytest.mark.sqlite_only
def test_litellm_gets_the_same_answer_as_the_sdk(luca: Luca) -> None:
    user = signed(luca.app)
    with luca.sdk(user) as client:
        expected = client.chat.completions.create(model="luca", messages=QUESTION).choices[0].message.content
    whole = litellm_completion(f"{luca.base}/v1", user.token, QUESTION)
    streamed = litellm_completion(f"{luca.base}/v1", user.token, QUESTION, stream=True)
    assert whole["content"] == streamed["content"] == expected
    assert whole["usage"]["total_tokens"] > 0 and streamed["usage"]["total_tokens"] > 0


@pytest.mark.sqlite_only
def test_with_the_first_provider_down_the_second_answers_and_model_says_so(luca: Luca) -> None:
    luca.primary.configure(status=500)
    with luca.sdk() as client:
        whole = client.chat.completions.create(model="luca", messages=QUESTION)
        chunks = list(client.chat.completions.create(
            model="luca", messages=[{"role": "user", "content": "What is depreciation?"}], stream=True))
    assert whole.model == "backup/backup-model" and whole.choices[0].message.content.startswith("[backup]")
    assert {c.model for c in chunks} == {"backup/backup-model"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("[backup]")


@pytest.mark.sqlite_only
def test_a_provider_model_is_that_provider_alone(luca: Luca) -> None:
    with luca.sdk() as client:
        answer = client.chat.completions.create(model="backup/backup-model", messages=QUESTION)
        assert answer.model == "backup/backup-model" and luca.primary.stats()["requests"] == 0
        luca.backup.configure(status=500)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="backup/backup-model",
                                           messages=[{"role": "user", "content": "What is goodwill?"}])
    assert raised.value.status_code == 503 and int(raised.value.response.headers["Retry-After"]) >= 1
    assert raised.value.body["type"] == "server_error" and raised.value.body["code"] == "providers_unavailable"
    assert luca.primary.stats()["requests"] == 0


@pytest.mark.sqlite_only
def test_a_stream_that_breaks_after_its_first_chunk_does_not_fall_back(luca: Luca) -> None:
    luca.primary.configure(cut_after=2)
    with luca.sdk() as client:
        stream = client.chat.completions.create(model="luca", messages=QUESTION, stream=True)
        received = []
        with pytest.raises(openai.APIError, match="cut off"):
            for chunk in stream:
                received.append(chunk)
    assert received and luca.backup.stats()["requests"] == 0


@pytest.mark.sqlite_only
def test_an_unknown_model_is_404_model_not_found(luca: Luca) -> None:
    with luca.sdk() as client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-17", messages=QUESTION)
    assert raised.value.body["code"] == "model_not_found" and raised.value.body["param"] == "model"


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"n": 2}, "n"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "a"}]}, "messages[0].role"),
    ({"frobnicate": True}, "frobnicate"),
    ({"temperature": "hot"}, "temperature"),
])
def test_what_luca_does_not_support_is_a_400_naming_the_parameter(luca: Luca, extra: dict, param: str) -> None:
    body = {"model": "luca", "messages": QUESTION, **extra}
    with luca.sdk() as client, pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", body=body, cast_to=object)
    assert raised.value.body["type"] == "invalid_request_error" and raised.value.body["param"] == param
    assert luca.primary.stats()["requests"] == 0


@pytest.mark.sqlite_only
def test_max_tokens_and_temperature_reach_the_provider_within_luca_s_cap(luca: Luca) -> None:
    cap = luca.app.config["AI_MAX_OUTPUT_TOKENS"]
    with luca.sdk() as client:
        client.chat.completions.create(model="luca", messages=QUESTION, max_tokens=5, temperature=0.2)
        client.chat.completions.create(model="luca", messages=QUESTION, max_completion_tokens=cap + 1000)
    first, second = luca.primary.requests
    assert (first["max_tokens"], first["temperature"]) == (5, 0.2)
    assert second["max_tokens"] == cap and "temperature" not in second


@pytest.mark.sqlite_only
def test_two_users_of_one_organisation_asking_the_same_single_question_make_one_provider_call(luca: Luca) -> None:
    with luca.sdk(signed(luca.app, org="Acme")) as alice, luca.sdk(signed(luca.app, org="Acme")) as bob:
        first = alice.chat.completions.with_raw_response.create(model="luca", messages=QUESTION)
        second = bob.chat.completions.with_raw_response.create(model="luca", messages=QUESTION)
    assert luca.primary.stats()["requests"] == 1
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content


@pytest.mark.sqlite_only
def test_users_of_different_organisations_never_share_an_answer(luca: Luca) -> None:
    for org in ("Acme", "Globex"):
        with luca.sdk(signed(luca.app, org=org)) as client:
            client.chat.completions.create(model="luca", messages=QUESTION)
    assert luca.primary.stats()["requests"] == 2


@pytest.mark.sqlite_only
def test_the_same_follow_up_with_history_from_two_users_makes_two_calls(luca: Luca) -> None:
    history = [*QUESTION, {"role": "assistant", "content": "A tax on sales."},
               {"role": "user", "content": "How do I register?"}]
    for _ in range(2):
        with luca.sdk(signed(luca.app, org="Acme")) as client:
            client.chat.completions.create(model="luca", messages=history)
    assert luca.primary.stats()["requests"] == 2


@pytest.mark.sqlite_only
def test_a_client_system_prompt_is_never_shared_with_another_user(luca: Luca) -> None:
    messages = [{"role": "system", "content": "The client is ACME Ltd, turnover 2.3m"}, *QUESTION]
    for _ in range(2):
        with luca.sdk(signed(luca.app, org="Acme")) as client:
            client.chat.completions.create(model="luca", messages=messages)
    assert luca.primary.stats()["requests"] == 2


@pytest.mark.sqlite_only
def test_concurrent_identical_streams_make_one_provider_call(luca: Luca) -> None:
    luca.primary.configure(latency_ms=300)
    users = [signed(luca.app, org="Acme") for _ in range(5)]
    texts: list[str] = []
    start = threading.Barrier(len(users))

    def ask(user: Api) -> None:
        with luca.sdk(user) as client:
            start.wait()
            chunks = client.chat.completions.create(model="luca", messages=QUESTION, stream=True)
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    threads = [threading.Thread(target=ask, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert luca.primary.stats()["requests"] == 1
    assert texts == ["[primary] You asked: What is VAT?"] * 5


@pytest.fixture
def limited_luca(app_factory, servers) -> Iterator[Luca]:
    """Luca with a budget of two messages a minute per user."""
    yield from luca_for(app_factory, servers, RATE_LIMITS_ENABLED=True, RATE_LIMIT_MESSAGES="2 per minute")


@pytest.mark.sqlite_only
def test_the_rate_limit_is_a_rate_limit_error_with_retry_after(limited_luca: Luca) -> None:
    user = signed(limited_luca.app)
    with limited_luca.sdk(user) as client:
        client.chat.completions.create(model="luca", messages=QUESTION)
        user.ask(user.new_conversation()["id"], "What is VAT?")  # the REST API spends the same budget
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="luca", messages=QUESTION)
    assert int(raised.value.response.headers["Retry-After"]) >= 1
    assert raised.value.body["type"] == "rate_limit_error" and "limit: 2 per 1 minute" in raised.value.body["message"]


@pytest.mark.sqlite_only
def test_answers_beyond_the_user_s_slots_are_refused_with_429(app_factory, servers) -> None:
    for luca in luca_for(app_factory, servers, AI_MAX_CONCURRENT_PER_USER=1):
        luca.primary.configure(latency_ms=1000)
        user = signed(luca.app)
        with luca.sdk(user) as client:
            stream = client.chat.completions.create(model="luca", messages=QUESTION, stream=True)
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model="luca", messages=[{"role": "user", "content": "Other?"}])
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("[primary]")
        assert raised.value.body["code"] == "too_many_concurrent_answers"


def test_nothing_is_stored_unless_the_request_names_a_conversation(luca: Luca) -> None:
    user = signed(luca.app)
    with luca.sdk(user) as client:
        plain = client.chat.completions.with_raw_response.create(model="luca", messages=QUESTION)
        assert "X-Luca-Conversation" not in plain.headers
        assert user.get("/api/conversations").get_json()["items"] == []
        stored = client.chat.completions.with_raw_response.create(
            model="luca", messages=[{"role": "user", "content": "What is EBITDA?"}],
            extra_headers={"X-Luca-Conversation": "new"})
        conversation = stored.headers["X-Luca-Conversation"]
        follow_up = [{"role": "user", "content": "What is EBITDA?"},
                     {"role": "assistant", "content": stored.parse().choices[0].message.content},
                     {"role": "user", "content": "And EBIT?"}]
        list(client.chat.completions.create(model="luca", messages=follow_up, stream=True,
                                            extra_headers={"X-Luca-Conversation": conversation}))
    messages = user.get(f"/api/conversations/{conversation}/messages?order=asc").get_json()["items"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "What is EBITDA?"), ("assistant", "[primary] You asked: What is EBITDA?"),
        ("user", "And EBIT?"), ("assistant", "[primary] You asked: And EBIT?")]
    assert messages[1]["provider"] == "primary" and messages[3]["status"] == "complete"
    titled = user.get(f"/api/conversations/{conversation}").get_json()
    assert titled["title"]  # the title job ran, as for any other conversation


def test_someone_else_s_or_an_unknown_conversation_is_404(luca: Luca) -> None:
    owner, stranger = signed(luca.app), signed(luca.app)
    theirs = owner.new_conversation()["id"]
    with luca.sdk(stranger) as client:
        for wanted in (theirs, str(uuid.uuid4()), "not-a-uuid"):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="luca", messages=QUESTION,
                                               extra_headers={"X-Luca-Conversation": wanted})
    assert luca.primary.stats()["requests"] == 0
    assert owner.get(f"/api/conversations/{theirs}/messages").get_json()["items"] == []


@pytest.fixture
def short_luca(app_factory, servers) -> Iterator[Luca]:
    """Luca storing questions of at most 50 characters."""
    yield from luca_for(app_factory, servers, MAX_MESSAGE_CHARS=50)


def test_a_question_too_long_to_store_is_a_400_and_stores_nothing(short_luca: Luca) -> None:
    luca = short_luca
    user = signed(luca.app)
    long = [{"role": "user", "content": "x" * 51}]
    with luca.sdk(user) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="luca", messages=long, extra_headers={"X-Luca-Conversation": "new"})
        assert raised.value.body["code"] == "content_too_long" and "MAX_MESSAGE_CHARS" in raised.value.body["message"]
        assert luca.primary.stats()["requests"] == 0
        assert user.get("/api/conversations").get_json()["items"] == []
        client.chat.completions.create(model="luca", messages=long)  # not stored: only the context bounds it
    assert luca.primary.stats()["requests"] == 1


@pytest.mark.sqlite_only
def test_a_read_token_may_list_models_but_not_ask(luca: Luca) -> None:
    owner = signed(luca.app)
    reader = owner.post("/api/tokens", json={"name": "reader", "scopes": ["read"]}).get_json()["token"]
    with openai.OpenAI(base_url=f"{luca.base}/v1", api_key=reader, max_retries=0) as client:
        assert [m.id for m in client.models.list()][0] == "luca"
        with pytest.raises(openai.PermissionDeniedError) as raised:
            client.chat.completions.create(model="luca", messages=QUESTION)
    assert raised.value.status_code == 403 and raised.value.body["code"] == "insufficient_scope"
    assert luca.primary.stats()["requests"] == 0


@pytest.mark.sqlite_only
def test_first_questions_are_shared_within_an_organisation_only() -> None:
    route = [OfflineProvider()]
    context = [{"role": "system", "content": "You are Luca."}, *QUESTION]
    acme_1, acme_2, other = (SimpleNamespace(organisation_id=org) for org in (1, 1, 2))
    key = {name: answer_key(route, context, index, scope=sharing_scope(user))
           for index, (name, user) in enumerate({"acme_1": acme_1, "acme_2": acme_2, "other": other}.items())}
    assert key["acme_1"] == key["acme_2"] != key["other"]
    assert sharing_scope(SimpleNamespace()) == "user"  # a user without an organisation shares with nobody
    assert answer_key(route, context, 1, scope="user") != answer_key(route, context, 2, scope="user")


PRICED = {"AI_PRICES": {"primary-model": [1, 1], "backup-model": [1, 1]}}


@pytest.fixture
def priced_luca(app_factory, servers) -> Iterator[Luca]:
    """Luca whose answers cost money (1 USD per 1,000 tokens in and out)."""
    yield from luca_for(app_factory, servers, **PRICED)


def assert_budget_exceeded(raised: pytest.ExceptionInfo[openai.RateLimitError]) -> None:
    """OpenAI's insufficient_quota, Luca's budget_exceeded, Retry-After until the UTC month ends."""
    assert raised.value.status_code == 429
    assert (raised.value.body["type"], raised.value.body["code"]) == ("insufficient_quota", "budget_exceeded")
    until_month_end = budgets.seconds_until_month_end(utcnow())
    assert until_month_end <= int(raised.value.response.headers["Retry-After"]) <= until_month_end + 60


def test_a_budget_raises_rate_limit_error_before_any_provider_call_and_stores_nothing(priced_luca: Luca) -> None:
    owner = signed(priced_luca.app, org="Acme")
    assert owner.patch("/api/org", json={"monthly_budget_usd": "0"}).status_code == 200
    with priced_luca.sdk(owner) as client:
        for extra in ({}, {"stream": True}, {"extra_headers": {"X-Luca-Conversation": "new"}}):
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model="luca", messages=QUESTION, **extra)  # a stream too: 429 first
            assert_budget_exceeded(raised)
    assert priced_luca.primary.stats()["requests"] == 0 and priced_luca.backup.stats()["requests"] == 0
    assert owner.get("/api/conversations").get_json()["items"] == []
    assert owner.get("/api/me/usage").get_json()["totals"]["answers"] == 0


def test_a_deduplicated_answer_is_served_over_budget(priced_luca: Luca) -> None:
    alice, bob = signed(priced_luca.app, org="Acme"), signed(priced_luca.app, org="Acme")
    with priced_luca.sdk(alice) as client:
        first = client.chat.completions.create(model="luca", messages=QUESTION).choices[0].message.content
    alice.patch("/api/org", json={"monthly_budget_usd": "0"})  # alice owns Acme: nobody may spend now
    with priced_luca.sdk(bob) as client:
        hit = client.chat.completions.with_raw_response.create(model="luca", messages=QUESTION)
        streamed = client.chat.completions.create(model="luca", messages=QUESTION, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == first
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="luca", messages=[{"role": "user", "content": "What is EBIT?"}])
    assert hit.headers["X-Cache"] == "hit" and hit.parse().choices[0].message.content == first
    assert_budget_exceeded(raised)
    assert priced_luca.primary.stats()["requests"] == 1
    saved = bob.get("/api/me/usage").get_json()["totals"]
    assert (saved["answers"], saved["cost_usd"], saved["cached_share"]) == (2, "0", 1.0)
    assert Decimal(saved["saved_usd"]) > 0


def test_every_v1_call_is_in_usage_under_openai_api(priced_luca: Luca) -> None:
    user = signed(priced_luca.app)
    user.ask(user.new_conversation()["id"], "What is a ledger?")  # the REST API: source api
    with priced_luca.sdk(user) as client:
        client.chat.completions.create(model="luca", messages=QUESTION)  # stored nowhere
        list(client.chat.completions.create(model="luca", messages=[{"role": "user", "content": "What is EBIT?"}],
                                            stream=True))
        client.chat.completions.create(model="luca", messages=[{"role": "user", "content": "What is EBITDA?"}],
                                       extra_headers={"X-Luca-Conversation": "new"})
    report = user.get("/api/me/usage?group_by=source").get_json()
    by_source = {item["group"]: item for item in report["items"]}
    assert {source: item["answers"] for source, item in by_source.items()} == {"api": 1, "openai-api": 3}
    with priced_luca.app.app_context():
        recorded = db.session.execute(sa.text(
            "SELECT cost_usd FROM usage_records WHERE source = 'openai-api' UNION ALL "
            "SELECT cost_usd FROM messages WHERE role = 'assistant' AND source = 'openai-api'")).scalars().all()
        stored = db.session.execute(sa.text("SELECT role, source FROM messages WHERE source = 'openai-api'")).all()
        spent = budgets.month_spend(("member", user.user_id))
    assert len(recorded) == 3 and Decimal(by_source["openai-api"]["cost_usd"]) == sum(Decimal(str(c)) for c in recorded)
    assert sorted(stored) == [("assistant", "openai-api"), ("user", "openai-api")]  # the stored exchange
    assert spent >= Decimal(report["totals"]["cost_usd"]) > 0  # answers, plus the titles
