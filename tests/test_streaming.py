"""Streamed answers (Server-Sent Events): order, fallback before the first delta, cuts, disconnects."""
from __future__ import annotations


import pytest
from flask import Flask

from luca.extensions import breakers
from tests.support.api import Api, create_user
from tests.support.apps import provider_overrides
from tests.support.sse import parse_events


@pytest.fixture
def stream_app(app_factory, servers) -> Flask:
    """Providers primary then backup."""
    primary, backup = servers
    return app_factory(**provider_overrides(primary, backup, AI_BREAKER_FAIL_MAX=3))


@pytest.fixture
def api(stream_app) -> Api:
    """A signed client."""
    user_id, token = create_user(stream_app, "alice@example.com")
    return Api(stream_app.test_client(), token, user_id)


def ask_streaming(api: Api, conversation_id: str, content: str) -> tuple[int, list[tuple[str, dict]]]:
    """Send a streamed question; return the status and the events."""
    response = api.ask(conversation_id, content, stream=True)
    if response.mimetype != "text/event-stream":
        return response.status_code, []
    return response.status_code, parse_events(response.get_data(as_text=True))


def test_stream_sends_start_deltas_in_order_and_end(api: Api, servers) -> None:
    conversation = api.new_conversation()
    status, events = ask_streaming(api, conversation["id"], "Explain accruals please")
    assert status == 200
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end"
    assert names.count("delta") >= 3 and set(names[1:-1]) == {"delta"}
    start, end = events[0][1], events[-1][1]
    assert start["message"]["role"] == "user" and start["provider"] == "primary"
    text = "".join(data["text"] for name, data in events if name == "delta")
    assert end["message"]["content"] == text
    assert text == "[primary] You asked: Explain accruals please"
    assert end["message"]["provider"] == "primary" and end["message"]["status"] == "complete"
    assert end["message"]["tokens_out"] > 0
    stored = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"]
    assert stored[0]["id"] == end["message"]["id"] and stored[0]["content"] == text


def test_stream_falls_back_before_the_first_delta(api: Api, servers) -> None:
    primary, backup = servers
    primary.configure(status=500)
    conversation = api.new_conversation()
    status, events = ask_streaming(api, conversation["id"], "hello")
    assert status == 200
    assert events[0][1]["provider"] == "backup"
    assert events[-1][0] == "end" and events[-1][1]["message"]["provider"] == "backup"
    assert primary.stats()["requests"] == 1


def test_a_cut_mid_stream_ends_with_an_error_and_saves_the_partial_answer(stream_app, api: Api, servers) -> None:
    primary, backup = servers
    primary.configure(cut_after=2)
    conversation = api.new_conversation()
    status, events = ask_streaming(api, conversation["id"], "a question that gets cut off")
    assert status == 200
    names = [name for name, _ in events]
    assert names == ["start", "delta", "delta", "error"]
    error = events[-1][1]
    partial = "".join(data["text"] for name, data in events if name == "delta")
    assert error["code"] == "stream_interrupted"
    assert error["answer"]["status"] == "incomplete" and error["answer"]["content"] == partial
    assert backup.stats()["requests"] == 0  # no fallback after the first delta
    stored = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"]
    assert (stored[0]["status"], stored[0]["content"]) == ("incomplete", partial)
    with stream_app.app_context():
        assert breakers.ai("primary").failures == 1


def test_all_providers_down_before_streaming_is_503(api: Api, servers) -> None:
    for server in servers:
        server.configure(status=502)
    conversation = api.new_conversation()
    response = api.ask(conversation["id"], "anyone?", stream=True)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "providers_unavailable"


def test_a_client_that_leaves_mid_stream_leaves_an_incomplete_answer(api: Api, servers) -> None:
    primary, _ = servers
    primary.configure(chunk_delay_ms=50)
    conversation = api.new_conversation()
    response = api.client.post(f"/api/conversations/{conversation['id']}/messages",
                               json={"content": "long answer please", "stream": True},
                               headers=api.headers(), buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    assert b"event: start" in first
    response.close()
    stored = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"]
    assert stored[0]["role"] == "assistant" and stored[0]["status"] == "incomplete"


def test_retry_can_stream(api: Api, servers) -> None:
    primary, backup = servers
    for server in servers:
        server.configure(status=500)
    conversation = api.new_conversation()
    message_id = api.ask(conversation["id"], "try me later").get_json()["error"]["details"]["message_id"]
    primary.configure(status=None)
    response = api.post(f"/api/conversations/{conversation['id']}/messages/{message_id}/retry",
                        json={"stream": True})
    events = parse_events(response.get_data(as_text=True))
    assert events[0][0] == "start" and events[-1][0] == "end"
    assert events[-1][1]["message"]["content"] == "[primary] You asked: try me later"


def test_offline_provider_streams_too(app: Flask) -> None:
    user_id, token = create_user(app, "carol@example.com")
    api = Api(app.test_client(), token, user_id)
    conversation = api.new_conversation()
    status, events = ask_streaming(api, conversation["id"], "What is depreciation?")
    assert status == 200 and events[-1][0] == "end"
    assert events[-1][1]["message"]["provider"] == "offline"
