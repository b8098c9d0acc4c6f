"""What each answer and each title costs: one price table and function, stored at write time, exact."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from config import TestConfig
from luca import create_app, pricing
from luca.ai.base import estimate_tokens
from luca.ai.context import system_prompt
from luca.extensions import db
from tests.support import ROOT
from tests.support.api import signed
from tests.support.apps import conversation_row, provider_overrides
from tests.support.processes import wait_until
from tests.support.sse import parse_events

PRICES = {"primary-model": [1.5, 2.25], "backup/backup-model": [0.5, 0.125]}


@pytest.fixture
def priced_app(app_factory, servers) -> Flask:
    """An app on the two fake providers with a price for each of their models."""
    return app_factory(**provider_overrides(*servers, AI_PRICES=PRICES))


def expected(price: list[float], answer: dict) -> Decimal:
    """The exact cost of an answer's tokens at a price per 1,000 tokens."""
    price_in, price_out = (Decimal(str(p)) for p in price)
    return (answer["tokens_in"] * price_in + answer["tokens_out"] * price_out) / 1000


def test_an_answer_stores_its_cost_from_the_providers_usage_for_each_of_two_models(priced_app, servers) -> None:
    primary, backup = servers
    api = signed(priced_app)
    first = api.ask(api.new_conversation()["id"], "What is VAT?").get_json()["answer"]
    primary.configure(status=500)
    second = api.ask(api.new_conversation()["id"], "What is an accrual?").get_json()["answer"]
    assert (first["model"], second["model"]) == ("primary-model", "backup-model")
    assert Decimal(first["cost_usd"]) == expected(PRICES["primary-model"], first) > 0
    assert Decimal(second["cost_usd"]) == expected(PRICES["backup/backup-model"], second) > 0
    assert first["saved_usd"] is None and second["saved_usd"] is None
    listed = api.get(f"/api/conversations/{first['conversation_id']}/messages").get_json()["items"]
    assert [(m["role"], m["cost_usd"]) for m in listed] == [("assistant", first["cost_usd"]), ("user", None)]


def test_without_usage_from_the_provider_the_cost_comes_from_the_token_estimate(priced_app, servers) -> None:
    primary, _ = servers
    primary.configure(usage=False)
    api = signed(priced_app)
    answer = api.ask(api.new_conversation()["id"], "How is depreciation booked?").get_json()["answer"]
    with priced_app.app_context():
        prompt_tokens = estimate_tokens(system_prompt()) + estimate_tokens("How is depreciation booked?")
    assert (answer["tokens_in"], answer["tokens_out"]) == (prompt_tokens, estimate_tokens(answer["content"]))
    assert Decimal(answer["cost_usd"]) == expected(PRICES["primary-model"], answer)


def test_a_streamed_answer_stores_its_cost(priced_app, servers) -> None:
    api = signed(priced_app)
    response = api.ask(api.new_conversation()["id"], "Explain deferred tax", stream=True)
    end = next(data for event, data in parse_events(response.get_data(as_text=True)) if event == "end")["message"]
    assert Decimal(end["cost_usd"]) == expected(PRICES["primary-model"], end) > 0


def test_a_deduplicated_answer_costs_nothing_and_records_what_it_saved(priced_app, servers) -> None:
    primary, _ = servers
    alice, bob = signed(priced_app, org="Acme"), signed(priced_app, org="Acme")
    first = alice.ask(alice.new_conversation()["id"], "What is the VAT rate?").get_json()["answer"]
    second = bob.ask(bob.new_conversation()["id"], "What is the VAT rate?").get_json()["answer"]
    assert primary.stats()["requests"] == 1 and second["cached"] is True
    assert Decimal(second["cost_usd"]) == 0
    assert Decimal(second["saved_usd"]) == Decimal(first["cost_usd"]) > 0


def test_a_title_stores_what_it_cost(priced_app, servers) -> None:
    primary, _ = servers
    api = signed(priced_app)
    conversation = api.new_conversation(title=None)["id"]
    api.ask(conversation, "What is goodwill?")
    wait_until(lambda: conversation_row(priced_app, conversation).title_cost_usd is not None, 10, "the title's cost")
    row = conversation_row(priced_app, conversation)
    title_request = primary.requests[-1]
    assert "Name this accounting conversation" in title_request["messages"][0]["content"]
    # The fake provider counts a quarter of the characters, plus one (tests/support/provider.py).
    prompt = sum(len(m["content"]) for m in title_request["messages"]) // 4 + 1
    answer = len(f"[primary] You asked: {title_request['messages'][-1]['content'][:200]}") // 4 + 1
    assert row.title_cost_usd == expected(PRICES["primary-model"], {"tokens_in": prompt, "tokens_out": answer})
    assert row.titled_at is not None


@pytest.mark.sqlite_only
def test_prices_are_found_by_provider_and_model_then_model_then_dated_name(app) -> None:
    app.config["AI_PRICES"] = {"gpt-4o-mini": [1, 2], "azure/gpt-4o-mini": [3, 4]}
    with app.app_context():
        assert pricing.price_of("openai", "gpt-4o-mini") == (Decimal(1), Decimal(2))
        assert pricing.price_of("azure", "gpt-4o-mini") == (Decimal(3), Decimal(4))
        assert pricing.price_of("openai", "gpt-4o-mini-2024-07-18") == (Decimal(1), Decimal(2))
        assert pricing.price_of("openai", "gpt-4o-2024-08-06") == (Decimal("0.0025"), Decimal("0.01"))
        assert pricing.price_of("offline", "gpt-4o-mini") == pricing.FREE
        assert pricing.price_of("ollama", "llama3") == pricing.FREE
        assert pricing.cost_usd("openai", "gpt-4o-mini", 333, 1) == Decimal("0.3350000000")


def test_the_migration_prices_the_answers_already_stored(empty_database: str) -> None:  # noqa: F811 - the fixture
    url = empty_database
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url, "AI_PRICES": {"old-model": [2, 4]}})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="0003")
        conversation = uuid.uuid4()
        statements = [
            "INSERT INTO users (id, email, name, is_admin, created_at) VALUES (1, 'a@example.com', '', false, '2026-01-01')",
            "INSERT INTO conversations (id, user_id, title_set_by_user, metadata, pinned, has_files, created_at, "
            f"updated_at) VALUES ('{conversation}', 1, false, '{{}}', false, false, '2026-01-01', '2026-01-01')",
        ]
        for index, cached in enumerate(('false', 'true')):
            statements.append(
                "INSERT INTO messages (conversation_id, user_id, role, content, status, provider, model, tokens_in, "
                f"tokens_out, cached, created_at) VALUES ('{conversation}', 1, 'assistant', 'a{index}', 'complete', "
                f"'openai', 'old-model', 100, 10, {cached}, '2026-01-01')")
        for statement in statements:
            db.session.execute(sa.text(statement))
        db.session.commit()
        upgrade(directory=str(ROOT / "migrations"))
        rows = db.session.execute(sa.text("SELECT cached, cost_usd, saved_usd FROM messages ORDER BY id")).all()
        db.session.remove()
        db.engine.dispose()
    assert [(bool(c), Decimal(str(cost)), saved and Decimal(str(saved))) for c, cost, saved in rows] == \
        [(False, Decimal("0.24"), None), (True, Decimal(0), Decimal("0.24"))]
