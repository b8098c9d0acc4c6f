"""The fake AI provider (tests/support/provider.py), driven through the real openai SDK and plain HTTP."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.support.provider import FakeProvider

MESSAGES = [{"role": "system", "content": "You are Luca."}, {"role": "user", "content": "What is VAT?"}]


@pytest.fixture
def server() -> Iterator[FakeProvider]:
    """A running test server named 'fake'."""
    with FakeProvider(name="fake") as running:
        yield running


@pytest.fixture
def client(server: FakeProvider) -> Iterator[openai.OpenAI]:
    """An openai client for the server, without retries."""
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0, timeout=5) as sdk:
        yield sdk


def ask(client: openai.OpenAI, **options: Any) -> Any:
    """One non-streamed completion."""
    return client.chat.completions.create(model="gpt-test", messages=MESSAGES, **options)


def http(server: FakeProvider, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    """A plain HTTP call to the server: status and decoded JSON body."""
    base = server.url.removesuffix("/v1")
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_answer_echoes_question_and_model_with_usage(client: openai.OpenAI) -> None:
    result = ask(client)
    text = result.choices[0].message.content
    assert text == "[fake] You asked: What is VAT?"
    assert result.model == "gpt-test"
    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert result.choices[0].finish_reason == "stop"
    prompt = len("You are Luca.What is VAT?") // 4 + 1
    assert result.usage.prompt_tokens == prompt
    assert result.usage.completion_tokens == len(text) // 4 + 1
    assert result.usage.total_tokens == prompt + len(text) // 4 + 1


def test_fixed_answer_setting(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(answer="Forty-two.")
    assert ask(client).choices[0].message.content == "Forty-two."


def test_stream_deltas_join_to_the_non_streamed_answer(client: openai.OpenAI) -> None:
    whole = ask(client).choices[0].message.content
    with ask(client, stream=True) as stream:
        chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 3
    assert "".join(deltas) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_sends_usage_chunk_when_asked(client: openai.OpenAI) -> None:
    with ask(client, stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


def test_stream_deltas_arrive_over_time(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(chunk_delay_ms=50)
    arrivals = []
    with ask(client, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 1) * 0.8


@pytest.mark.parametrize(("status", "error"), [
    (500, openai.InternalServerError),
    (429, openai.RateLimitError),
    (400, openai.BadRequestError),
])
def test_status_setting_raises_matching_sdk_error(server: FakeProvider, client: openai.OpenAI,
                                                  status: int, error: type[Exception]) -> None:
    server.configure(status=status)
    with pytest.raises(error) as caught:
        ask(client)
    assert caught.value.status_code == status
    assert server.stats()["by_status"] == {str(status): 1}


def test_rate_limit_sends_retry_after(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(status=429)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.response.headers["retry-after"] == "1"


def test_wrong_api_key_raises_authentication_error(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(api_key="secret")
    with pytest.raises(openai.AuthenticationError):
        ask(client)
    with openai.OpenAI(base_url=server.url, api_key="secret", max_retries=0, timeout=5) as right:
        assert ask(right).choices[0].message.content.startswith("[fake]")


def test_fail_next_fails_twice_then_recovers(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(fail_next=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client)
    assert ask(client).choices[0].message.content.startswith("[fake]")
    assert server.stats()["by_status"] == {"500": 2, "200": 1}
    assert server.settings()["fail_next"] == 0


def test_hang_makes_client_time_out_quickly(server: FakeProvider) -> None:
    server.configure(hang_s=2)
    started = time.perf_counter()
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0, timeout=0.3) as impatient:
        with pytest.raises(openai.APITimeoutError):
            ask(impatient)
    assert time.perf_counter() - started < 1.5


def test_drop_raises_connection_error(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(drop=True)
    with pytest.raises(openai.APIConnectionError) as caught:
        ask(client)
    assert not isinstance(caught.value, openai.APITimeoutError)


def test_cut_stream_gives_two_deltas_then_an_error(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(cut_after=2)
    deltas = []
    with pytest.raises(openai.APIConnectionError):
        with ask(client, stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    deltas.append(chunk.choices[0].delta.content)
    assert deltas == ["[fake] ", "You "]
    assert server.stats()["completed"] == 0


def test_concurrent_calls_overlap(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(latency_ms=300)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: ask(client).choices[0].message.content, range(8)))
    assert len(answers) == 8
    stats = server.stats()
    assert stats["max_active"] == 8
    assert stats["active"] == 0
    assert stats["completed"] == 8


def test_requests_log_keeps_bodies(server: FakeProvider, client: openai.OpenAI) -> None:
    ask(client, max_tokens=50)
    (body,) = server.requests
    assert body["model"] == "gpt-test"
    assert body["messages"] == MESSAGES
    assert body["max_tokens"] == 50


def test_control_endpoint_configures_the_server(server: FakeProvider, client: openai.OpenAI) -> None:
    status, settings = http(server, "POST", "/_control", {"answer": "Via HTTP.", "latency_ms": 1})
    assert status == 200
    assert settings["answer"] == "Via HTTP."
    assert ask(client).choices[0].message.content == "Via HTTP."


def test_control_endpoint_rejects_unknown_settings(server: FakeProvider) -> None:
    status, body = http(server, "POST", "/_control", {"colour": "blue"})
    assert status == 400
    assert "colour" in body["error"]["message"]


def test_stats_endpoint_reports_and_reset_clears(server: FakeProvider, client: openai.OpenAI) -> None:
    ask(client)
    with ask(client, stream=True) as stream:
        list(stream)
    status, stats = http(server, "GET", "/_stats")
    assert status == 200
    assert stats == {"requests": 2, "active": 0, "max_active": 1, "by_status": {"200": 2},
                     "streams": 1, "completed": 2}
    server.configure(answer="changed")
    assert http(server, "POST", "/_reset")[0] == 200
    assert server.stats()["requests"] == 0
    assert server.requests == []
    assert server.settings()["answer"] is None


def test_bad_json_and_missing_messages_are_400(server: FakeProvider) -> None:
    request = urllib.request.Request(server.url + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    with caught.value as error:
        assert error.code == 400
        assert json.loads(error.read())["error"]["type"] == "invalid_request_error"
    status, body = http(server, "POST", "/v1/chat/completions", {"model": "m"})
    assert status == 400
    assert "messages" in body["error"]["message"]


def test_unknown_path_is_404_and_models_are_listed(server: FakeProvider) -> None:
    status, body = http(server, "GET", "/nowhere")
    assert status == 404
    assert "error" in body
    status, models = http(server, "GET", "/v1/models")
    assert status == 200
    assert models["object"] == "list"
    assert models["data"][0]["id"]


def wait_until_active(server: FakeProvider) -> None:
    """Wait until the server is busy with a request."""
    deadline = time.monotonic() + 5
    while server.stats()["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)


def call_in_thread(client: openai.OpenAI, errors: list[Exception]) -> threading.Thread:
    """Ask in a background thread, collecting the connection error it is expected to end with."""
    def call() -> None:
        try:
            ask(client)
        except openai.APIConnectionError as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    return caller


def test_stop_is_prompt_while_a_request_hangs() -> None:
    server = FakeProvider(hang_s=30).start()
    errors: list[Exception] = []
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0, timeout=10) as sdk:
        caller = call_in_thread(sdk, errors)
        wait_until_active(server)
        started = time.perf_counter()
        server.stop()
        caller.join(timeout=5)
    assert time.perf_counter() - started < 1
    assert not caller.is_alive()
    assert len(errors) == 1


def test_reset_cuts_short_a_hanging_request_and_forgets_it(server: FakeProvider, client: openai.OpenAI) -> None:
    server.configure(hang_s=30)
    errors: list[Exception] = []
    caller = call_in_thread(client, errors)
    wait_until_active(server)
    server.reset()
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert len(errors) == 1
    assert server.stats() == {"requests": 0, "active": 0, "max_active": 0, "by_status": {},
                              "streams": 0, "completed": 0}

