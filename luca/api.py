"""Request validation with pydantic, and the OpenAPI document built from the same models."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.routing import IntegerConverter, Rule, UUIDConverter

from luca.errors import APIError, not_found
from luca.extensions import openapi

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

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
    # Server-Sent Events the endpoint may answer instead (200, text/event-stream), by event name.
    events: Mapping[str, type[BaseModel]] | None = None
    events_description: str = "Server-Sent Events"
    public: bool = False  # needs no credentials (signing in, signing up); the document says so with security: []


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
    try:  # validators read configured limits from the context: the app's settings
        return model.model_validate_json(raw or b"{}", context=current_app.config)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        invalid = [err for err in errors if err["type"] == "json_invalid"]
        if invalid:  # the parser's reason, e.g. "recursion limit exceeded" for JSON nested 200 deep
            raise APIError(400, "invalid_json", "the request body is not valid JSON",
                           [{"field": "body", "message": invalid[0]["msg"]}]) from None
        coded = [err for err in errors if (err.get("ctx") or {}).get("error_code")]
        if coded:  # a limit with a code of its own (e.g. content_too_long), which names the limit
            raise APIError(422, coded[0]["ctx"]["error_code"], coded[0]["msg"], validation_details(exc)) from None
        raise APIError(422, "validation_error", "the request body is not valid",
                       validation_details(exc)) from None


def parse_query(model: type[BaseModel]) -> BaseModel:
    """Validate the query string against model; 422 when it does not fit."""
    try:
        return model.model_validate(request.args.to_dict(), context=current_app.config)
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


def endpoint(**spec_args: Any) -> Decorator:
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


def endpoints(errors: tuple[int, ...]) -> Callable[..., Decorator]:
    """A blueprint's endpoint(): the same, with the errors every endpoint of the blueprint may answer added."""

    def blueprint_endpoint(**spec_args: Any) -> Decorator:
        return endpoint(**{**spec_args, "errors": (*errors, *spec_args.get("errors", ()))})

    return blueprint_endpoint


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
# Any endpoint of a blueprint behind a token may answer these: it needs the token (401, and 429 once this
# address has used up its failed-authentication budget), may name an unknown row (404) and needs the database (503).
API_ERRORS = (401, 404, 429, 503)
# An endpoint that reads a body may also answer these.
BODY_ERRORS = (400, 413, 415, 422)
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "required": True,
                               "schema": {"type": "integer", "minimum": 1}}}


def event_stream(events: Mapping[str, type[BaseModel]], refs: Mapping[tuple[type[BaseModel], str], Any]
                 ) -> dict[str, Any]:
    """The schema of a text/event-stream response: one of the events, each named, its data one model as JSON.

    In OpenAPI 3.1 the schema of a text/event-stream response describes one event.
    """
    return {"oneOf": [
        {"type": "object", "required": ["event", "data"], "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": refs[(model, "serialization")]}}}
        for name, model in events.items()
    ]}


def openapi_document(app: Flask) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document from every endpoint that declares a spec."""
    specs: list[tuple[str, str, Rule, Callable[..., Any], EndpointSpec]] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        spec = getattr(view, "api_spec", None)
        if spec is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            specs.append((path, method.lower(), rule, view, spec))

    wanted = {(s.body, "validation") for *_, s in specs if s.body is not None}
    wanted |= {(s.response, "serialization") for *_, s in specs if s.response is not None}
    wanted |= {(model, "serialization") for *_, s in specs for model in (s.events or {}).values()}
    wanted.add((ErrorBody, "serialization"))
    refs, schema = models_json_schema(sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1])),
                                      ref_template="#/components/schemas/{model}")
    components = schema.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for path, method, rule, view, spec in specs:
        doc = (view.__doc__ or "").strip()
        operation: dict[str, Any] = {
            "operationId": f"{rule.endpoint.replace('.', '_')}_{method}",
            "summary": doc.splitlines()[0] if doc else view.__name__,
            "tags": [path.split("/")[2] if path.count("/") > 1 else "api"],
            "parameters": path_parameters(rule) + query_parameters(spec.query),
            "responses": {},
        }
        if spec.public:
            operation["security"] = []
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
        if spec.events:
            operation["responses"]["200"] = {"description": spec.events_description, "content": {
                "text/event-stream": {"schema": event_stream(spec.events, refs)}}}
        errors = set(spec.errors)
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
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"},
                                "sessionCookie": {"type": "apiKey", "in": "cookie",
                                                  "name": app.config.get("SESSION_COOKIE", "session"),
                                                  "description": "From POST /api/auth/login; writes also need "
                                                                 "the X-CSRF-Token header"}},
        },
        "security": [{"bearerAuth": []}],  # or the session cookie (sessionCookie), for the web page
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
