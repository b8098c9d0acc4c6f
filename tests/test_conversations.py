"""The conversations API: create, read, update, delete, lists, cursor walks and messages."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

from luca.extensions import db
from luca.models import Conversation, Message, utcnow
from tests.support.api import Api
from tests.support.apps import count_statements


def walk(api: Api, path: str, limit: int, during: callable = None) -> list[dict]:
    """Follow next_cursor from the first page to the last, calling during() after each page."""
    seen, cursor = [], None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = api.get(f"{path}?{query}")
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body["items"]) <= limit
        seen.extend(body["items"])
        if during:
            during()
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_me_returns_the_signed_in_user(api: Api) -> None:
    body = api.get("/api/me").get_json()
    assert body["email"] == "alice@example.com"
    assert body["is_admin"] is False


def test_create_conversation_returns_it_with_metadata(api: Api) -> None:
    body = api.new_conversation(title="VAT return Q3", metadata={"client": "acme", "year": 2026})
    assert body["title"] == "VAT return Q3"
    assert body["title_set_by_user"] is True
    assert body["metadata"] == {"client": "acme", "year": 2026}
    assert uuid.UUID(body["id"])


def test_conversation_without_title_waits_for_one(api: Api) -> None:
    body = api.new_conversation(title=None)
    assert body["title"] is None
    assert body["title_set_by_user"] is False


def test_patch_renames_pins_and_replaces_metadata(api: Api) -> None:
    conversation = api.new_conversation()
    response = api.patch(f"/api/conversations/{conversation['id']}",
                         json={"title": "Payroll", "pinned": True, "metadata": {"tag": "hr"}})
    assert response.status_code == 200
    body = api.get(f"/api/conversations/{conversation['id']}").get_json()
    assert (body["title"], body["title_set_by_user"], body["pinned"], body["metadata"]) == \
        ("Payroll", True, True, {"tag": "hr"})


def test_patch_with_null_title_hands_naming_back(api: Api) -> None:
    conversation = api.new_conversation(title="Mine")
    body = api.patch(f"/api/conversations/{conversation['id']}", json={"title": None}).get_json()
    assert body["title"] is None and body["title_set_by_user"] is False


def test_delete_removes_conversation_and_messages(app, api: Api) -> None:
    conversation = api.new_conversation()
    api.ask(conversation["id"], "What is VAT?")
    assert api.delete(f"/api/conversations/{conversation['id']}").status_code == 204
    assert api.get(f"/api/conversations/{conversation['id']}").status_code == 404
    with app.app_context():
        assert db.session.query(Message).count() == 0


def test_list_puts_pinned_first_then_newest_activity(api: Api) -> None:
    old, pinned, new = (api.new_conversation(title=t) for t in ("old", "pinned", "new"))
    api.patch(f"/api/conversations/{pinned['id']}", json={"pinned": True})
    api.ask(old["id"], "Is this active now?")
    titles = [c["title"] for c in api.get("/api/conversations").get_json()["items"]]
    assert titles == ["pinned", "old", "new"]


def seed_conversations(app, user_id: int, count: int) -> set[str]:
    """Insert conversations directly, half of them sharing one timestamp to test the tie-breaker."""
    base = utcnow() - timedelta(days=1)
    rows = [Conversation(user_id=user_id, title=f"c{i}", pinned=i % 25 == 0,
                         created_at=base, updated_at=base if i % 2 else base + timedelta(seconds=i))
            for i in range(count)]
    with app.app_context():
        db.session.add_all(rows)
        db.session.commit()
        return {str(c.id) for c in rows}


def test_walking_conversations_returns_each_once_in_order_while_new_ones_arrive(app, api: Api) -> None:
    expected = seed_conversations(app, api.user_id, 250)
    seen = walk(api, "/api/conversations", 7, during=lambda: api.new_conversation(title="during the walk"))
    old = [c for c in seen if c["id"] in expected]
    assert len(old) == 250 and {c["id"] for c in old} == expected
    keys = [(c["pinned"], c["updated_at"], uuid.UUID(c["id"])) for c in old]
    assert keys == sorted(keys, reverse=True)


def seed_messages(app, user_id: int, conversation_id: str, count: int) -> list[int]:
    """Insert messages directly, many sharing a timestamp."""
    base = utcnow() - timedelta(hours=1)
    with app.app_context():
        rows = [Message(conversation_id=uuid.UUID(conversation_id), user_id=user_id,
                        role="user" if i % 2 == 0 else "assistant", content=f"message {i}",
                        created_at=base + timedelta(seconds=i // 3)) for i in range(count)]
        db.session.add_all(rows)
        db.session.commit()
        return [m.id for m in rows]


def test_walking_messages_returns_each_once_in_order_while_new_ones_arrive(app, api: Api) -> None:
    conversation = api.new_conversation()
    expected = seed_messages(app, api.user_id, conversation["id"], 250)
    path = f"/api/conversations/{conversation['id']}/messages"
    seen = walk(api, path, 7, during=lambda: api.ask(conversation["id"], "another question"))
    old = [m for m in seen if m["id"] in set(expected)]
    assert [m["id"] for m in old] == list(reversed(expected))
    keys = [(m["created_at"], m["id"]) for m in seen]
    assert keys == sorted(keys, reverse=True)


def test_messages_can_be_read_oldest_first(app, api: Api) -> None:
    conversation = api.new_conversation()
    expected = seed_messages(app, api.user_id, conversation["id"], 30)
    seen = walk(api, f"/api/conversations/{conversation['id']}/messages", 4)
    assert [m["id"] for m in seen] == list(reversed(expected))
    response = api.get(f"/api/conversations/{conversation['id']}/messages?order=asc&limit=100")
    assert [m["id"] for m in response.get_json()["items"]] == expected


def test_metadata_filter_matches_by_containment(api: Api) -> None:
    acme = api.new_conversation(title="a", metadata={"client": "acme", "tags": {"year": 2026, "q": 3}})
    api.new_conversation(title="b", metadata={"client": "globex", "tags": {"year": 2026}})
    api.new_conversation(title="c")
    wanted = json.dumps({"client": "acme", "tags": {"year": 2026}})
    items = api.get("/api/conversations", query_string={"metadata": wanted}).get_json()["items"]
    assert [c["id"] for c in items] == [acme["id"]]


def test_list_query_filters_by_words(api: Api) -> None:
    payroll = api.new_conversation(title="Payroll questions")
    other = api.new_conversation(title="Something else")
    api.ask(other["id"], "How do I book depreciation on a van?")
    found = {c["id"] for c in api.get("/api/conversations?q=payroll").get_json()["items"]}
    assert found == {payroll["id"]}
    found = {c["id"] for c in api.get("/api/conversations?q=depreciation").get_json()["items"]}
    assert found == {other["id"]}


def test_sending_a_message_stores_question_and_labelled_offline_answer(app, api: Api) -> None:
    conversation = api.new_conversation()
    response = api.ask(conversation["id"], "What is the corporate tax rate?")
    assert response.status_code == 201
    body = response.get_json()
    assert body["message"]["role"] == "user"
    assert body["answer"]["role"] == "assistant"
    assert body["answer"]["provider"] == "offline"
    assert "offline" in body["answer"]["model"]
    assert "Offline answer" in body["answer"]["content"]
    assert body["answer"]["tokens_in"] > 0 and body["answer"]["tokens_out"] > 0
    items = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"]
    assert [m["role"] for m in items] == ["assistant", "user"]


def test_sending_a_message_moves_the_conversation_to_the_top(api: Api) -> None:
    first = api.new_conversation(title="first")
    api.new_conversation(title="second")
    api.ask(first["id"], "hello")
    assert api.get("/api/conversations?limit=1").get_json()["items"][0]["id"] == first["id"]


def test_listing_conversations_takes_at_most_two_statements(app, api: Api) -> None:
    for i in range(5):
        api.new_conversation(title=f"c{i}")
    with count_statements(app) as statements:
        assert api.get("/api/conversations").status_code == 200
    assert len(statements) <= 2, statements


def test_sending_a_message_takes_at_most_five_statements(app, api: Api) -> None:
    conversation = api.new_conversation()
    api.ask(conversation["id"], "first question")
    with count_statements(app) as statements:
        assert api.ask(conversation["id"], "What is VAT?").status_code == 201
    assert len(statements) <= 5, statements
