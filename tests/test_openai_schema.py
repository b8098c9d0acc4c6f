"""Luca's /v1 responses checked against OpenAI's published schema: the official SDK's own pydantic types.

Every body (a chat.completion, each chat.completion.chunk, the models, each error) must validate
strictly against the SDK's type for it, with nothing the type does not define: the SDK's models
keep unknown fields in model_extra, and none may be there. The /v1 routes are not in Luca's own
OpenAPI document (/api/openapi.json, which schemathesis drives): their contract is OpenAI's, and
this module is its check.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from openai import BaseModel as OpenAIModel
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject

from tests.support.api import Api, signed
from tests.support.apps import provider_overrides

pytestmark = pytest.mark.sqlite_only

QUESTION = {"model": "luca", "messages": [{"role": "user", "content": "What is VAT?"}]}


def conforming(model: type[OpenAIModel], data: Any) -> OpenAIModel:
    """data validated strictly as the SDK's model, with no field the model does not define (at any depth)."""
    validated = model.model_validate(data, strict=True)
    unknown = list(extra_fields(validated, model.__name__))
    assert unknown == [], f"fields OpenAI's {model.__name__} does not define: {unknown}"
    return validated


def extra_fields(value: Any, path: str) -> Any:
    """The paths of every field an SDK model received but does not define."""
    if isinstance(value, OpenAIModel):
        for name in value.model_extra or {}:
            yield f"{path}.{name}"
        for name in type(value).model_fields:
            yield from extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from extra_fields(item, f"{path}[{index}]")


@pytest.fixture
def user(app_factory, servers) -> Api:
    """A user of Luca in front of the primary fake provider."""
    primary, _ = servers
    return signed(app_factory(**provider_overrides(primary)))


def data_events(body: str) -> list[str]:
    """The data of each Server-Sent Event."""
    return [block.removeprefix("data: ") for block in body.strip().split("\n\n")]


def test_a_completion_conforms(user: Api) -> None:
    response = user.post("/v1/chat/completions", json=QUESTION)
    assert response.status_code == 200 and response.mimetype == "application/json"
    completion = conforming(ChatCompletion, response.get_json())
    assert completion.usage is not None


def test_every_chunk_conforms_and_the_stream_ends_with_done(user: Api) -> None:
    response = user.post("/v1/chat/completions",
                         json={**QUESTION, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = data_events(response.get_data(as_text=True))
    assert events[-1] == "[DONE]"
    bodies = [json.loads(data) for data in events[:-1]]
    chunks = [conforming(ChatCompletionChunk, body) for body in bodies]
    assert chunks[-1].usage is not None and len(chunks) > 3
    assert all("usage" in body for body in bodies)  # null but in the last, as OpenAI's include_usage does


def test_models_conform(user: Api) -> None:
    body = user.get("/v1/models").get_json()
    assert body["object"] == "list" and set(body) == {"object", "data"}
    assert [conforming(Model, item).id for item in body["data"]] == ["luca", "primary/primary-model"]


@pytest.mark.parametrize(("request_args", "status"), [
    ({"json": QUESTION, "headers": {"Authorization": "Bearer luca_wrong"}}, 401),
    ({"json": {**QUESTION, "tools": []}}, 400),
    ({"data": "{not json", "content_type": "application/json"}, 400),
    ({"json": {**QUESTION, "model": "nope"}}, 404),
])
def test_errors_conform(user: Api, request_args: dict[str, Any], status: int) -> None:
    headers = request_args.pop("headers", user.headers())
    response = user.client.post("/v1/chat/completions", headers=headers, **request_args)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    conforming(ErrorObject, body["error"])


def test_a_wrong_method_and_an_unknown_path_answer_in_openai_s_shape_too(user: Api) -> None:
    for response in (user.get("/v1/chat/completions"), user.get("/v1/embeddings")):
        assert response.status_code in (404, 405)
        conforming(ErrorObject, response.get_json()["error"])


def test_the_v1_routes_are_left_out_of_luca_s_openapi_document(app: Flask) -> None:
    paths = app.test_client().get("/api/openapi.json").get_json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/v1")]
