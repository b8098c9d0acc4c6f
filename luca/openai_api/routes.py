"""The /v1 endpoints: chat completions and the models a client may ask for."""
from __future__ import annotations

import json
import time
from typing import Any

from flask import Response, request
from pydantic import ValidationError

from luca.auth import current_user
from luca.extensions import providers
from luca.limits import rate_limit
from luca.openai_api import bp, completions
from luca.openai_api.errors import invalid
from luca.openai_api.schemas import UNSUPPORTED, ChatCompletionRequest, Model, ModelList

STARTED = int(time.time())  # a model's "created": when this process began serving it


def param_of(location: tuple[int | str, ...]) -> str:
    """pydantic's error location as OpenAI names a parameter: messages[0].content."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part not in ("str", "list[TextPart]"):  # the member of a union pydantic tried
            name += f".{part}" if name else str(part)
    return name


def parse_request() -> ChatCompletionRequest:
    """The request body, validated strictly; a 400 that names the parameter otherwise."""
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw)
    except ValueError:
        raise invalid("the request body is not valid JSON", None, code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object", None)
    for field, feature in UNSUPPORTED.items():
        if field in data:
            raise invalid(f"Luca's OpenAI-compatible API does not support {feature} ('{field}')", field,
                          code="unsupported_parameter")
    if isinstance(data.get("n"), int) and not isinstance(data["n"], bool) and data["n"] > 1:
        raise invalid("Luca answers one choice per request; n must be 1", "n", code="unsupported_parameter")
    try:
        body = ChatCompletionRequest.model_validate(data, strict=True)
    except ValidationError as exc:
        # The deepest error: for content (a string or parts) that is the part that did not fit.
        first = max(exc.errors(include_url=False, include_input=False), key=lambda err: len(err["loc"]))
        param = param_of(first["loc"])
        if first["type"] == "extra_forbidden":
            raise invalid(f"unrecognised request argument '{param}'", param, code="unsupported_parameter") from None
        if first["type"] in ("literal_error", "union_tag_invalid") and ".content" in param:
            raise invalid("only text content is supported (no images, audio or files)", param,
                          code="unsupported_content") from None
        raise invalid(f"{param}: {first['msg']}", param) from None
    if body.stream_options is not None and not body.stream:
        raise invalid("stream_options is only allowed with stream: true", "stream_options")
    return body


@bp.post("/chat/completions")
@rate_limit("messages")
def chat_completions() -> Any:
    """Answer a chat completion (OpenAI's API): whole, or streamed as chat.completion.chunk events.

    The write scope it needs is checked by require_user (luca.auth.authenticate: write for a POST)."""
    return completions.answer(parse_request(), current_user())


def models() -> list[Model]:
    """luca (the fallback chain, in AI_PROVIDERS order), then <provider>/<model> for each provider alone."""
    listed = [Model(id="luca", created=STARTED, owned_by="luca")]
    listed += [Model(id=completions.model_id(p.name, p.model), created=STARTED, owned_by=p.name)
               for p in providers.all()]
    return listed


@bp.get("/models")
def list_models() -> Response:
    """The models a client may ask for."""
    return Response(ModelList(data=models()).model_dump_json(), mimetype="application/json")


@bp.get("/models/<path:model>")
def get_model(model: str) -> Response:
    """One model; 404 for an unknown id."""
    found = next((m for m in models() if m.id == model), None)
    if found is None:
        raise invalid(f"the model '{model}' does not exist", "model", code="model_not_found", status=404)
    return Response(found.model_dump_json(), mimetype="application/json")
