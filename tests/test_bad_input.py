"""Bad input gets a 4xx JSON error and leaves no rows behind."""
from __future__ import annotations

import json

import pytest

from luca.extensions import db
from luca.models import Conversation, Message
from tests.support.api import Api, multipart


def row_counts(app) -> tuple[int, int]:
    """How many conversations and messages exist."""
    with app.app_context():
        return db.session.query(Conversation).count(), db.session.query(Message).count()


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is a JSON error with this status (and code)."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


@pytest.fixture
def conversation(api: Api) -> dict:
    """A conversation to send bad messages to."""
    return api.new_conversation(title="target")


BAD_MESSAGE_BODIES = [
    ({"content": 42}, 422),
    ({"content": ["a"]}, 422),
    ({"content": None}, 422),
    ({}, 422),
    ({"content": ""}, 422),
    ({"content": "   \n\t "}, 422),
    ({"content": "x" * 20_001}, 422),
    ({"content": "hi", "stream": "yes"}, 422),
    ({"content": "hi", "unexpected": 1}, 422),
    ([1, 2, 3], 422),
    ("just a string", 422),
]


@pytest.mark.parametrize("body,status", BAD_MESSAGE_BODIES)
def test_bad_message_bodies_are_rejected_without_rows(app, api: Api, conversation: dict, body, status) -> None:
    before = row_counts(app)
    response = api.post(f"/api/conversations/{conversation['id']}/messages", json=body)
    assert_error(response, status)
    assert row_counts(app) == before


def test_malformed_json_is_400(app, api: Api, conversation: dict) -> None:
    before = row_counts(app)
    response = api.client.post(f"/api/conversations/{conversation['id']}/messages", data='{"content": "hi"',
                               headers=api.headers({"Content-Type": "application/json"}))
    assert_error(response, 400, "invalid_json")
    assert row_counts(app) == before


def test_non_json_body_is_415(api: Api) -> None:
    response = api.client.post("/api/conversations", data="title=x", headers=api.headers(
        {"Content-Type": "application/x-www-form-urlencoded"}))
    assert_error(response, 415)


def test_body_over_max_content_length_is_413(app, api: Api) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1024
    before = row_counts(app)
    response = api.post("/api/conversations", json={"title": "t", "metadata": {"blob": "x" * 5000}})
    assert_error(response, 413)
    assert row_counts(app) == before


def test_over_long_content_names_the_limit(api: Api, conversation: dict) -> None:
    error = assert_error(api.ask(conversation["id"], "x" * 20_001), 422, "content_too_long")
    assert "20000" in error["message"]


@pytest.mark.parametrize("body", [
    {"title": ""}, {"title": "x" * 201}, {"title": 5}, {"metadata": "not an object"},
    {"metadata": [1]}, {"pinned": "true"},
])
def test_bad_conversation_bodies_are_422(app, api: Api, body) -> None:
    before = row_counts(app)
    assert_error(api.post("/api/conversations", json=body), 422, "validation_error")
    assert row_counts(app) == before


def test_the_title_limit_is_the_configured_one(app, api: Api) -> None:
    app.config["MAX_TITLE_CHARS"] = 10
    error = assert_error(api.post("/api/conversations", json={"title": "x" * 11}), 422, "validation_error")
    assert error["details"] == [{"field": "title", "message": "String should have at most 10 characters"}]
    assert api.post("/api/conversations", json={"title": "x" * 10}).status_code == 201


def test_oversized_metadata_is_422(app, api: Api) -> None:
    app.config["MAX_METADATA_BYTES"] = 100
    assert_error(api.post("/api/conversations", json={"metadata": {"k": "v" * 200}}), 422, "metadata_too_large")


@pytest.mark.parametrize("body", [{"pinned": "yes"}, {"title": 3}, {"metadata": 1}, {"colour": "red"}])
def test_bad_patches_change_nothing(api: Api, conversation: dict, body) -> None:
    assert_error(api.patch(f"/api/conversations/{conversation['id']}", json=body), 422)
    after = api.get(f"/api/conversations/{conversation['id']}").get_json()
    assert (after["title"], after["pinned"], after["metadata"]) == ("target", False, {})


@pytest.mark.parametrize("cursor", ["garbage", "WzFd", "eyJhIjoxfQ", "W251bGwsbnVsbCxudWxsXQ", "%%%", "x" * 400])
def test_invalid_cursor_is_400(api: Api, conversation: dict, cursor: str) -> None:
    assert_error(api.get("/api/conversations", query_string={"cursor": cursor}), 400, "invalid_cursor")
    path = f"/api/conversations/{conversation['id']}/messages"
    assert_error(api.get(path, query_string={"cursor": cursor}), 400, "invalid_cursor")


def test_cursor_from_the_other_list_is_400(app, api: Api, conversation: dict) -> None:
    for i in range(3):
        api.new_conversation(title=f"c{i}")
    cursor = api.get("/api/conversations?limit=1").get_json()["next_cursor"]
    path = f"/api/conversations/{conversation['id']}/messages"
    assert_error(api.get(path, query_string={"cursor": cursor}), 400, "invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_limit_out_of_range_is_422(api: Api, limit: str) -> None:
    assert_error(api.get("/api/conversations", query_string={"limit": limit}), 422, "validation_error")


@pytest.mark.parametrize("value", ["{", "[1]", "3", "{}", '"s"'])
def test_bad_metadata_filter_is_400(api: Api, value: str) -> None:
    assert_error(api.get("/api/conversations", query_string={"metadata": value}), 400, "invalid_metadata_filter")


@pytest.mark.parametrize("query", [
    '"', "'", '"unbalanced', "a & | ! b", "(((", "NEAR(", "*", "-", "tax OR", "AND", "col:umn", "\\", "<script>",
    "a' OR '1'='1", "'; DROP TABLE messages; --", "\x00", "🙂", "!!!", "!(vat)",
])
def test_search_strings_full_of_operators_are_safe(api: Api, conversation: dict, query: str) -> None:
    api.ask(conversation["id"], "How is VAT on imports handled?")
    response = api.get("/api/search", query_string={"q": query})
    assert response.status_code in (200, 422), response.get_data(as_text=True)
    assert isinstance(response.get_json().get("items", response.get_json().get("error")), (list, dict))
    listing = api.get("/api/conversations", query_string={"q": query})
    assert listing.status_code in (200, 422)


def test_search_without_query_is_422(api: Api) -> None:
    assert_error(api.get("/api/search"), 422, "validation_error")
    assert_error(api.get("/api/search?q=" + "x" * 201), 422, "validation_error")


def test_unknown_route_is_json_404(client) -> None:
    assert_error(client.get("/api/nowhere"), 404)


def test_wrong_method_is_json_405(api: Api) -> None:
    response = api.client.put("/api/conversations", headers=api.headers())
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_message_to_unknown_conversation_is_404_without_rows(app, api: Api) -> None:
    before = row_counts(app)
    assert_error(api.ask("5b1a4f7e-0000-4000-8000-000000000000", "hello"), 404, "not_found")
    assert row_counts(app) == before


def test_error_bodies_are_json_everywhere(api: Api, conversation: dict) -> None:
    response = api.client.post(f"/api/conversations/{conversation['id']}/messages", data=b"\xff\xfe",
                               headers=api.headers({"Content-Type": "application/json"}))
    assert response.status_code == 400
    assert json.loads(response.get_data())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("value", ['{"a":"b\\u0000"}', '{"a\\u0000":1}', '{"\\ud800":1}',
                                   '{"k":1180591620717411303424}', '{"k":NaN}', '{"k":1e999}'])
def test_metadata_filters_the_databases_cannot_compare_are_400(api: Api, value: str) -> None:
    assert_error(api.get("/api/conversations", query_string={"metadata": value}), 400, "invalid_metadata_filter")


@pytest.mark.parametrize("query", [{"to": "0001-01-01"}, {"to": "0"}, {"from": "2026-02-30"}, {"to": "26-1-1"}])
def test_analytics_days_must_be_real_iso_days(make_api, query: dict) -> None:
    admin = make_api("root@example.com", admin=True)
    response = admin.get("/api/admin/analytics", query_string=query)
    if query == {"to": "0001-01-01"}:
        assert response.status_code == 200  # the earliest day there is: the range starts there too
        assert response.get_json()["from"] == "0001-01-01"
    else:
        assert_error(response, 422, "validation_error")


def test_an_upload_name_with_control_characters_is_cleaned(api: Api, conversation: dict) -> None:
    body, content_type = multipart({"file": ("bad\x07name\t.csv", b"a,b\n1,2\n")})
    response = api.client.post(f"/api/conversations/{conversation['id']}/files", headers=api.headers(),
                               data=body, content_type=content_type)
    assert response.status_code == 202
    assert response.get_json()["filename"] == "badname.csv"


def test_upload_names_lose_nul_and_lone_surrogates() -> None:
    from luca.conversations.files import clean_filename

    assert clean_filename("a\x00b\ud800.pdf") == "ab.pdf"
    assert clean_filename("\x00") == "document"
    assert clean_filename(None) == "document"
