"""Request validation with pydantic, and the OpenAPI document built from the same models."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Flask, Response, render_template, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.routing import IntegerConverter, Rule, UUIDConverter

from luca.errors import APIError, not_found
from luca.extensions import openapi
from luca.schemas import MessageOut

# The largest id a row can have (BIGINT on PostgreSQL, INTEGER on SQLite: both signed 64-bit).
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class EndpointSpec:
    """What one endpoint takes and gives, for validation and for the OpenAPI document."""

    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    optional_body: bool = False
    upload: str | None = None  # the multipart field of an upload endpoint
    extra_responses: dict[int, str] = field(default_factory=dict)


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Reduce pydantic's errors to field locations and messages a client can show."""
    return [
        {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def parse_body(model: type[BaseModel]) -> BaseModel:
    """Validate the JSON body against model; 415, 400 or 422 when it does not fit."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        invalid = [err for err in exc.errors(include_url=False, include_input=False) if err["type"] == "json_invalid"]
        if invalid:  # the parser's reason, e.g. "recursion limit exceeded" for JSON nested 200 deep
            raise APIError(400, "invalid_json", "the request body is not valid JSON",
                           [{"field": "body", "message": invalid[0]["msg"]}]) from None
        raise APIError(422, "validation_error", "the request body is not valid",
                       validation_details(exc)) from None


def parse_query(model: type[BaseModel]) -> BaseModel:
    """Validate the query string against model; 422 when it does not fit."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise APIError(422, "validation_error", "the query string is not valid",
                       validation_details(exc)) from None


def to_response(result: Any, status: int) -> Any:
    """Serialise a pydantic model (or a (model, status) pair) with pydantic-core's fast JSON."""
    if isinstance(result, tuple):
        result, status = result
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), status=status, mimetype="application/json")
    if isinstance(result, str):
        return Response(result, status=status)
    return result


def endpoint(**spec_args: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an endpoint's body, query and response models; validated values arrive as kwargs."""
    spec = EndpointSpec(**spec_args)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if spec.query is not None:
                kwargs["query"] = parse_query(spec.query)
            if spec.body is not None:
                empty = spec.optional_body and not request.content_length and not request.is_json
                kwargs["body"] = spec.body() if empty else parse_body(spec.body)
            for name, value in (request.view_args or {}).items():
                if isinstance(value, int) and value > MAX_ID:  # no such row; the database would refuse the number
                    raise not_found(name.removesuffix("_id"))
            return to_response(view(*args, **kwargs), spec.status)

        wrapper.api_spec = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


ERROR_DESCRIPTIONS = {
    400: "Bad request (malformed JSON, invalid cursor)",
    401: "Missing, wrong or revoked token",
    403: "Not allowed for this user",
    404: "Unknown id, or one that belongs to another user",
    413: "Body larger than the configured limit",
    415: "Body is not JSON",
    422: "Validation error",
    429: "Too many requests (a budget of this user, or of this address's failed authentications); see Retry-After",
    503: "A dependency is unavailable; see Retry-After",
}
# Any endpoint under /api may answer these: it needs a token (401, and 429 once this address has used up its
# failed-authentication budget), may name an unknown row (404) and needs the database (503).
API_ERRORS = (401, 404, 429, 503)
# An endpoint that reads a body may also answer these.
BODY_ERRORS = (400, 413, 415, 422)
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "required": True,
                               "schema": {"type": "integer", "minimum": 1}}}


def event_stream(message: dict[str, Any]) -> dict[str, Any]:
    """The Server-Sent Events of a streamed answer (see luca.conversations.answers); data is JSON.

    In OpenAPI 3.1 the schema of a text/event-stream response describes one event.
    """
    def event(name: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": ["event", "data"], "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
                "type": "object", "required": required, "properties": properties}}}}

    return {"oneOf": [
        event("start", ["conversation_id", "message", "provider", "model", "cached"], {
            "conversation_id": {"type": "string", "format": "uuid"}, "message": message,
            "provider": {"type": "string"}, "model": {"type": "string"}, "cached": {"type": "boolean"}}),
        event("delta", ["text"], {"text": {"type": "string"}}),
        event("end", ["message"], {"message": message}),
        event("error", ["code", "message"], {"code": {"type": "string"}, "message": {"type": "string"},
                                             "answer": message}),
    ]}


def streams(spec: EndpointSpec) -> bool:
    """Whether the endpoint answers 200 with Server-Sent Events when its body says "stream": true."""
    return spec.body is not None and "stream" in spec.body.model_fields


def openapi_document(app: Flask) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document from every endpoint that declares a spec."""
    specs: list[tuple[str, str, Callable[..., Any], EndpointSpec, list[dict[str, Any]]]] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        spec = getattr(view, "api_spec", None)
        if spec is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            specs.append((path, method.lower(), view, spec, path_parameters(rule)))

    wanted = {(s.body, "validation") for _, _, _, s, _ in specs if s.body is not None}
    wanted |= {(s.response, "serialization") for _, _, _, s, _ in specs if s.response is not None}
    wanted.add((ErrorBody, "serialization"))
    if any(streams(s) for _, _, _, s, _ in specs):
        wanted.add((MessageOut, "serialization"))
    refs, schema = models_json_schema(sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1])),
                                      ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for path, method, view, spec, params in specs:
        doc = (view.__doc__ or "").strip()
        operation: dict[str, Any] = {
            "operationId": f"{view.__module__.split('.')[-2]}_{view.__name__}_{method}",
            "summary": doc.splitlines()[0] if doc else view.__name__,
            "tags": [path.split("/")[2] if path.count("/") > 1 else "api"],
            "parameters": params + query_parameters(spec.query),
            "responses": {},
        }
        if spec.upload:
            operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": [spec.upload],
                "properties": {spec.upload: {"type": "string", "format": "binary"}}}}}}
        if spec.body is not None:
            operation["requestBody"] = {"required": not spec.optional_body, "content": {
                "application/json": {"schema": refs[(spec.body, "validation")]}}}
        ok: dict[str, Any] = {"description": "Success"}
        if spec.response is not None:
            ok["content"] = {spec.content_type: {"schema": refs[(spec.response, "serialization")]}}
        operation["responses"][str(spec.status)] = ok
        for status, description in spec.extra_responses.items():
            operation["responses"][str(status)] = {"description": description}
        if streams(spec):
            operation["responses"].setdefault("200", {"description": "With stream: true, Server-Sent Events"})
            operation["responses"]["200"]["content"] = {"text/event-stream": {
                "schema": event_stream(refs[(MessageOut, "serialization")])}}
        errors = set(spec.errors)
        if path.startswith("/api"):
            errors.update(API_ERRORS)
        if spec.body is not None or spec.upload:
            errors.update(BODY_ERRORS)
        for status in sorted(errors):
            operation["responses"][str(status)] = {
                "description": ERROR_DESCRIPTIONS.get(status, "Error"),
                "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
                **({"headers": RETRY_AFTER} if status in (429, 503) else {}),
            }
        paths.setdefault(path, {})[method] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": "Luca API", "version": "1.0.0",
                 "description": "The REST API of Luca, an AI accounting assistant."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


def path_parameters(rule: Rule) -> list[dict[str, Any]]:
    """Describe a rule's <converter:name> parts as OpenAPI path parameters."""
    schemas = {UUIDConverter: {"type": "string", "format": "uuid"}, IntegerConverter: {"type": "integer"}}
    return [
        {"name": name, "in": "path", "required": True,
         "schema": schemas.get(type(converter), {"type": "string"})}
        for name, converter in rule._converters.items()
    ]


def query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    """Describe a query model's fields as OpenAPI query parameters."""
    if model is None:
        return []
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop,
         **({"description": prop["description"]} if "description" in prop else {})}
        for name, prop in schema.get("properties", {}).items()
    ]


class ErrorDetail(BaseModel):
    """The inside of an error response."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error response: {"error": {"code", "message", "details"?}}."""

    error: ErrorDetail


def register_docs(app: Flask) -> None:
    """Serve the OpenAPI document at /api/openapi.json and a readable page at /api/docs."""

    @app.get("/api/openapi.json")
    def openapi_json() -> Any:
        """The OpenAPI 3.1 document of this API."""
        return openapi.of(app)

    @app.get("/api/docs")
    def api_docs() -> str:
        """A page listing every endpoint, its parameters and responses."""
        return render_template("api_docs.html", spec=openapi.of(app))
