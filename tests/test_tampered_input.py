"""Forged cursors, filters and bodies get a 4xx on every list endpoint, never a 500."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Api

DAY = "2024-01-01T00:00:00"
UUID = "8f0e0c1e-0000-4000-8000-000000000000"


def cursor_of(text: str) -> str:
    """A cursor carrying this JSON text, encoded the way luca.pagination writes cursors."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def nested(depth: int, kind: str = "object") -> str:
    """JSON text of an object (or array) nested depth levels deep, built without recursion."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.fixture
def conversation(api: Api) -> dict[str, Any]:
    """A conversation with a question and an answer, so its message list has rows."""
    conversation = api.new_conversation(title="target")
    assert api.ask(conversation["id"], "What is VAT?").status_code == 201
    return conversation


def assert_invalid_cursor(response: Any) -> None:
    """The response is the 400 for a cursor this API did not write."""
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("payload", [
    [True, DAY, 123], [True, DAY, [1]], [True, DAY, {}], [True, DAY, 10**30], [True, DAY, None],
    [1, DAY, UUID], [None, DAY, UUID], ["true", DAY, UUID],
    [True, 5, UUID], [True, [DAY], UUID], [True, DAY + "+05:00", UUID], [True, "2024-01-01", UUID],
    [True, DAY, "{" + UUID + "}"], [True, DAY, UUID.upper()], [True, DAY, "x" * 300], [True, "9" * 300, UUID],
    [[True, DAY, UUID]], {"pinned": True}, 10**30, [],
])
def test_a_forged_conversation_cursor_is_400(api: Api, payload: Any) -> None:
    response = api.get("/api/conversations", query_string={"cursor": cursor_of(json.dumps(payload))})
    assert_invalid_cursor(response)


@pytest.mark.parametrize("payload", [
    [DAY, 2**63], [DAY, -(2**63) - 1], [DAY, 10**30], [DAY, True], [DAY, False], [DAY, 1.0], [DAY, "1"],
    [5, 1], [None, 1], [{}, 1], [DAY * 12, 1], [DAY + "\u0000", 1], [DAY, 1, 1], [DAY],
])
def test_a_forged_message_cursor_is_400(api: Api, conversation: dict[str, Any], payload: Any) -> None:
    path = f"/api/conversations/{conversation['id']}/messages"
    for order in ("asc", "desc"):
        assert_invalid_cursor(api.get(path, query_string={"cursor": cursor_of(json.dumps(payload)), "order": order}))


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_a_message_cursor_at_the_ends_of_the_64_bit_range_is_accepted(api: Api, conversation: dict[str, Any],
                                                                         value: int) -> None:
    path = f"/api/conversations/{conversation['id']}/messages"
    response = api.get(path, query_string={"cursor": cursor_of(json.dumps([DAY, value]))})
    assert response.status_code == 200, response.get_json()


def test_a_cursor_the_api_wrote_still_pages(api: Api, conversation: dict[str, Any]) -> None:
    for i in range(3):
        api.new_conversation(title=f"c{i}")
    first = api.get("/api/conversations?limit=2").get_json()
    second = api.get("/api/conversations", query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()
    assert len(first["items"]) == len(second["items"]) == 2
    path = f"/api/conversations/{conversation['id']}/messages"
    page = api.get(path, query_string={"limit": 1}).get_json()
    assert len(api.get(path, query_string={"limit": 1, "cursor": page["next_cursor"]}).get_json()["items"]) == 1


@pytest.mark.parametrize("kind", ["object", "array"])
def test_a_metadata_filter_nested_too_deep_is_400_naming_the_limit(app, api: Api, kind: str) -> None:
    app.config["MAX_METADATA_DEPTH"] = 32
    text = nested(1000, kind) if kind == "array" else nested(330)  # as deep as fits in the 2,000-character filter
    response = api.get("/api/conversations", query_string={"metadata": text})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_metadata_filter" and "32" in error["message"]


@pytest.mark.parametrize("depth,status,code", [(33, 422, "metadata_too_deep"), (150, 422, "metadata_too_deep"),
                                               (1000, 400, "invalid_json")])
def test_metadata_bodies_nested_too_deep_are_refused_on_create_and_update(app, api: Api, depth: int, status: int,
                                                                          code: str) -> None:
    app.config["MAX_METADATA_DEPTH"] = 32
    target = api.new_conversation(title="target")
    body = '{"metadata":' + nested(depth) + "}"
    for method, path in (("post", "/api/conversations"), ("patch", f"/api/conversations/{target['id']}")):
        response = getattr(api.client, method)(path, data=body, headers=api.headers(
            {"Content-Type": "application/json"}))
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == code
    assert len(api.get("/api/conversations").get_json()["items"]) == 1
    assert api.get(f"/api/conversations/{target['id']}").get_json()["metadata"] == {}


def test_metadata_nested_exactly_to_the_limit_is_stored_and_found(app, api: Api) -> None:
    app.config["MAX_METADATA_DEPTH"] = 32
    response = api.client.post("/api/conversations", data='{"metadata":' + nested(32) + "}",
                               headers=api.headers({"Content-Type": "application/json"}))
    assert response.status_code == 201, response.get_json()
    found = api.get("/api/conversations", query_string={"metadata": nested(32)}).get_json()["items"]
    assert [c["id"] for c in found] == [response.get_json()["id"]]


def list_endpoints(conversation_id: str) -> list[str]:
    """Every GET endpoint that lists something."""
    return ["/api/conversations", f"/api/conversations/{conversation_id}/messages", "/api/search",
            f"/api/conversations/{conversation_id}/files", "/api/admin/users", "/api/admin/analytics"]


HOSTILE_PARAMS = [
    {"q": "x" * 10_000}, {"q": "%00"}, {"q": "\x00"}, {"q": "\ufffd" * 200}, {"q": " "},
    {"limit": "9" * 400}, {"limit": "-9223372036854775809"}, {"limit": "1e3"}, {"limit": "true"}, {"limit": ""},
    {"order": "sideways"}, {"from": "9999-12-31", "to": "9999-12-31"}, {"from": "0001-01-01", "to": "0001-01-02"},
    {"to": "2024-13-01"}, {"from": "2024-01-01\x00"}, {"cursor": "x" * 10_000}, {"metadata": "x" * 10_000},
]


@pytest.mark.parametrize("params", HOSTILE_PARAMS)
def test_hostile_query_parameters_on_every_list_endpoint_are_never_a_5xx(make_api, params: dict[str, str]) -> None:
    admin = make_api("root@example.com", admin=True)
    conversation = admin.new_conversation()
    for path in list_endpoints(conversation["id"]):
        response = admin.get(path, query_string=params)
        assert response.status_code < 500, (path, params, response.get_data(as_text=True))
        assert response.status_code in (200, 400, 422), (path, params, response.status_code)
        if response.status_code != 200:
            assert response.get_json()["error"]["message"]


# -- the property: random JSON in every place a client can put JSON ----------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 10**30, DAY, UUID, ""])
           | st.text(max_size=30))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


def with_one_slot_replaced(key: list[Any]) -> st.SearchStrategy[list[Any]]:
    """A real cursor's key with one of its values swapped for random JSON (most often a wrong scalar)."""
    return st.tuples(st.integers(0, len(key) - 1), SCALARS | JSON_VALUES).map(
        lambda pick: [*key[:pick[0]], pick[1], *key[pick[0] + 1:]])


# The keys of the two cursors the API writes: conversations (pinned, updated_at, id), messages (created_at, id).
FORGED_KEYS = st.sampled_from([[True, DAY, UUID], [DAY, 1]]).flatmap(with_one_slot_replaced)
JSON_TEXTS = st.one_of(
    JSON_VALUES.map(json.dumps),
    FORGED_KEYS.map(json.dumps),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, min_size=1, max_size=3).map(json.dumps),
    st.builds(nested, st.integers(1, 1200) | st.sampled_from([32, 33, 999, 1000]), st.sampled_from(["object", "array"])),
)


def requests_for(text: str, conversation_id: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, options) of every request that carries this JSON text somewhere."""
    for path in list_endpoints(conversation_id):
        for name, value in (("cursor", cursor_of(text)), ("metadata", text), ("q", text[:300]), ("limit", text[:40])):
            yield "get", path, {"query_string": {name: value}}
    body = '{"metadata":' + text + "}"
    yield "post", "/api/conversations", {"data": body}
    yield "patch", f"/api/conversations/{conversation_id}", {"data": body}


@pytest.mark.slow
def test_random_json_as_cursor_filter_or_body_never_gets_a_5xx(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    conversation = admin.new_conversation(metadata={"client": {"id": 7}})
    admin.ask(conversation["id"], "What is VAT?")

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(JSON_TEXTS)
    def no_server_error(text: str) -> None:
        for method, path, options in requests_for(text, conversation["id"]):
            headers = admin.headers({"Content-Type": "application/json"} if "data" in options else None)
            response = getattr(admin.client, method)(path, headers=headers, **options)
            assert response.status_code < 500, (method, path, options, response.get_data(as_text=True))

    no_server_error()
