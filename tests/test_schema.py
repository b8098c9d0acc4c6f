"""Bad input at scale: schemathesis drives every operation of /api/openapi.json with generated requests.

Every call carries an admin's valid bearer token (so the admin API is reached too), and every
answer must conform to the OpenAPI document: no 5xx, a documented status code and content
type, a body that matches its schema (Server-Sent Events included, event by event), the
documented headers. Path parameters are steered to real rows most of the time (seeded
conversations with questions and answers, a document, another user's conversation), so the
handlers behind the 404 are reached.

One test item per operation and database (`[GET /api/me][sqlite]`); each builds its app with
rate limits off (this is about conformance, not budgets) and the default offline AI provider.

The schema is loaded at import (`@schema.parametrize()`), not through the lazy
`schemathesis.pytest.from_fixture`: in schemathesis 4.32.5 that one touches `Function._nodeid`,
which pytest 9.2 no longer has. Calls are sent to each test's app with `app=`.
"""
from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.core import NOT_SET
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import ignored_auth

from config import TestConfig
from luca import create_app
from tests.support.api import Api, create_user
from tests.support.apps import close_app

MAX_EXAMPLES = 50  # per operation and database, in the fuzzing phase (the coverage phase adds its own cases)

CONFIG = {
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "database": "none",  # no example database: every run explores afresh, nothing replays
        # The token is ours (valid, an admin's): no generated or removed Authorization headers.
        "with-security-parameters": False,
        # Unknown query parameters are ignored, as HTTP APIs do; OpenAPI does not forbid them.
        "allow-extra-parameters": False,
    },
    # Read a streamed answer to its end (schemathesis stops after 20 events by default), so the
    # whole stream is validated, `end` event included.
    "max-stream-events": 100_000,
    "checks": {
        "enabled": False,  # only these, each on purpose:
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},  # Retry-After on 429/503
        "negative_data_rejection": {"enabled": True},  # for request bodies: see filter_failure below
        "ignored_auth": {"enabled": True},  # the same request without / with a wrong token must be a 401
        "unsupported_method": {"enabled": True},  # other methods: 405
        "allow_header_conformance": {"enabled": True},  # ... with an Allow header that lists the right ones
        # Off, and why:
        # - positive_data_acceptance: schema-valid input the API refuses with a documented 400/422 by
        #   design: opaque cursors, the `metadata` filter (JSON inside a query string), from > to,
        #   content blank after trimming, metadata over MAX_METADATA_BYTES. JSON Schema cannot say these.
        # - use_after_free, ensure_resource_availability, object_level_authorization: they judge
        #   sequences of calls (the stateful phase), which this per-operation test does not run.
        # - missing_required_header: the API declares no header parameters (the token is ours).
        # - max_response_time: no latency budget is part of this contract.
    },
}

# The coverage phase and the fuzzing phase share one fixture per test item: the rows are only added to.
SETTINGS = settings(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much,
    HealthCheck.data_too_large, HealthCheck.large_base_example,
])


def load_schema() -> Any:
    """The OpenAPI document as the app serves it at /api/openapi.json, loaded once through WSGI.

    It comes from a throwaway app (the document does not depend on the database); every call
    is sent to the test's own app with `app=`.
    """
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    try:
        return schemathesis.openapi.from_wsgi("/api/openapi.json", app,
                                              config=schemathesis.Config.from_dict(CONFIG))
    finally:
        close_app(app)


schema = load_schema()


@schema.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Judge "schema-violating request accepted" for request bodies only.

    Bodies are parsed strictly (pydantic strict mode, unknown fields refused), so any body
    that breaks the schema must be refused. Query strings are parsed leniently on purpose
    ("5" is 5), and schemathesis' negative query values do not survive serialisation
    intact (an empty array is left out of the URL, so the request it sent was valid).
    """
    if isinstance(failure, AcceptedNegativeData) and case.meta is not None:
        return case.meta.is_negative_at(ParameterLocation.BODY)
    return True


@dataclass
class Rows:
    """Real rows of the admin user that generated path parameters are steered to."""

    api: Api
    conversations: list[str] = field(default_factory=list)
    questions: dict[str, list[int]] = field(default_factory=dict)  # conversation id -> its questions' ids
    files: list[int] = field(default_factory=list)
    foreign_conversation: str = ""  # another user's: a 404, exactly like an unknown one


def seed(app: Flask, api: Api) -> Rows:
    """Two conversations with questions and answers, a document, and another user's conversation."""
    rows = Rows(api)
    for metadata in ({"client": "acme", "year": 2024}, {}):
        conversation_id = api.new_conversation(metadata=metadata)["id"]
        rows.conversations.append(conversation_id)
        rows.questions[conversation_id] = []
        for question in ("What is the corporate tax rate?", "And the VAT rate on books?"):
            response = api.ask(conversation_id, question)
            assert response.status_code == 201, response.get_json()
            rows.questions[conversation_id].append(response.get_json()["message"]["id"])
    upload = api.client.post(f"/api/conversations/{rows.conversations[0]}/files", headers=api.headers(),
                             data={"file": (io.BytesIO(b"Revenue,100\nCosts,40\n"), "ledger.csv")},
                             content_type="multipart/form-data")
    assert upload.status_code == 202, upload.get_json()
    rows.files.append(upload.get_json()["id"])
    _, other_token = create_user(app, "schema-other@example.com")
    rows.foreign_conversation = Api(api.client, other_token, 0).new_conversation()["id"]
    return rows


@pytest.fixture
def seeded(app_factory: Callable[..., Flask]) -> tuple[Flask, Rows]:
    """The app without rate limits, an admin with a token, and rows to aim at."""
    app = app_factory(RATE_LIMITS_ENABLED=False)
    user_id, token = create_user(app, "schema-admin@example.com", admin=True)
    return app, seed(app, Api(app.test_client(), token, user_id))


def as_number(value: Any) -> int | None:
    """A generated path value as a number (a UUID's 128 bits, an integer), or None when it is neither."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value).int
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def use_real_rows(case: Any, rows: Rows) -> None:
    """Aim valid path parameters at real rows about three times in four.

    The choice follows from the generated value, so Hypothesis replays and shrinks a case
    to the same request. Invalid values (a negative case's mutation) are left alone.
    """
    params = case.path_parameters
    if not params or params is NOT_SET:
        return
    number = as_number(params.get("conversation_id"))
    if number is not None and number % 8 != 1:  # 1: stays a random, unknown id
        if case.method.upper() == "DELETE":
            conversation_id = rows.api.new_conversation()["id"]  # a fresh one: the seeded rows stay
        elif number % 8 == 5:
            conversation_id = rows.foreign_conversation
        else:
            conversation_id = rows.conversations[number % len(rows.conversations)]
        params["conversation_id"] = conversation_id
        message = as_number(params.get("message_id"))
        questions = rows.questions.get(conversation_id)
        if message is not None and message % 4 != 1 and questions:
            params["message_id"] = questions[message % len(questions)]
    file_number = as_number(params.get("file_id"))
    if file_number is not None and file_number % 4 != 1:
        params["file_id"] = rows.files[file_number % len(rows.files)]
    token_number = as_number(params.get("token_id"))
    if token_number is not None and case.method.upper() == "DELETE":  # never the token these calls carry
        created = rows.api.post("/api/tokens", json={"name": "fuzzed"}).get_json()
        params["token_id"] = created["id"] if token_number % 4 != 1 else token_number + 10_000
    user_number = as_number(params.get("user_id"))
    if user_number is not None and user_number % 4 != 1:
        params["user_id"] = rows.api.user_id  # oneself: refused (403), so the admin stays a member
    name = params.get("name")
    if isinstance(name, str) and len(name) % 4 != 1:
        params["name"] = ("database", "AI-offline", "redis", "external-api")[len(name) % 4]


@schema.parametrize()
@SETTINGS
def test_every_operation_conforms_to_the_openapi_document(case: Any, seeded: tuple[Flask, Rows]) -> None:
    app, rows = seeded
    use_real_rows(case, rows)
    case.call_and_validate(app=app, headers=rows.api.headers())


@pytest.mark.parametrize("path,body", [
    ("/api/conversations/{conversation_id}/messages", {"content": "Is a home office deductible?", "stream": True}),
    ("/api/conversations/{conversation_id}/messages/{message_id}/retry", {"stream": True}),
])
def test_streamed_answers_conform_to_the_event_stream_schema(seeded: tuple[Flask, Rows], path: str,
                                                             body: dict[str, Any]) -> None:
    """Every run checks the Server-Sent Events of both streaming endpoints, event by event."""
    app, rows = seeded
    conversation_id = rows.conversations[0]
    path_parameters: dict[str, Any] = {"conversation_id": conversation_id}
    if "{message_id}" in path:
        path_parameters["message_id"] = rows.questions[conversation_id][0]
    case = schema[path]["POST"].Case(path_parameters=path_parameters, body=body, media_type="application/json")
    response = case.call_and_validate(app=app, headers=rows.api.headers())
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "start" and events[-1] == "end" and "delta" in events


def test_rate_limited_answers_conform_to_the_openapi_document(app_factory: Callable[..., Flask]) -> None:
    """The generated test runs without rate limits; here a used-up budget's 429 is checked the same way."""
    app = app_factory(RATE_LIMIT_MESSAGES="1 per minute", RATE_LIMIT_AUTH_FAILURES="1 per minute")
    user_id, token = create_user(app, "schema-limited@example.com")
    api = Api(app.test_client(), token, user_id)
    conversation_id = api.new_conversation()["id"]
    send = schema["/api/conversations/{conversation_id}/messages"]["POST"]
    me = schema["/api/me"]["GET"]
    # ignored_auth would send probes with a wrong token, which spend the failed-authentication budget
    only = {"excluded_checks": [ignored_auth], "app": app}

    def ask() -> Any:
        return send.Case(path_parameters={"conversation_id": conversation_id}, body={"content": "What is VAT?"},
                         media_type="application/json").call_and_validate(headers=api.headers(), **only)

    assert ask().status_code == 201
    assert ask().status_code == 429  # the user's message budget
    assert me.Case().call_and_validate(headers={"Authorization": "Bearer wrong"}, **only).status_code == 401
    assert me.Case().call_and_validate(headers=api.headers(), **only).status_code == 200  # valid: never refused
    assert me.Case().call_and_validate(headers={"Authorization": "Bearer wrong"}, **only).status_code == 429
