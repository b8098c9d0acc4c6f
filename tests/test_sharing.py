"""Sharing a conversation read-only with the organisation: colleagues read it, cannot write to it, other
organisations never see it, and unsharing takes effect at once in every process."""
from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from tests.support.api import Api, create_user, upload
from tests.support.services import RedisTarget


def people(app: Flask) -> tuple[Api, Api, Api]:
    """An owner and a colleague of one organisation, and someone of another."""
    made = [create_user(app, email, org=org) for email, org in (
        ("owner@firm.example", "Firm"), ("colleague@firm.example", "Firm"), ("stranger@other.example", "Other"))]
    return tuple(Api(app.test_client(), token, user_id) for user_id, token in made)  # type: ignore[return-value]


def shared_conversation(owner: Api) -> str:
    """A conversation with a question and answer, shared with the owner's organisation."""
    conversation = owner.new_conversation(title="Year-end close")["id"]
    assert owner.ask(conversation, "Which accruals are missing?").status_code == 201
    response = owner.patch(f"/api/conversations/{conversation}", json={"shared": True})
    assert response.status_code == 200 and response.get_json()["shared"] is True
    return conversation


def test_a_colleague_finds_and_reads_a_shared_conversation(app: Flask) -> None:
    owner, colleague, _ = people(app)
    conversation = shared_conversation(owner)
    listed = colleague.get("/api/conversations?shared=true").get_json()["items"]
    assert [(c["id"], c["user_id"]) for c in listed] == [(conversation, owner.user_id)]
    assert colleague.get("/api/conversations").get_json()["items"] == []  # their own list stays their own
    assert colleague.get(f"/api/conversations/{conversation}").get_json()["title"] == "Year-end close"
    messages = colleague.get(f"/api/conversations/{conversation}/messages?order=asc").get_json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert owner.get("/api/conversations?shared=true").get_json()["items"] == []  # one's own is not "shared with me"


def test_a_colleague_cannot_write_to_a_shared_conversation(app: Flask) -> None:
    owner, colleague, _ = people(app)
    conversation = shared_conversation(owner)
    path = f"/api/conversations/{conversation}"
    question = owner.get(f"{path}/messages").get_json()["items"][-1]["id"]
    writes = [colleague.ask(conversation, "May I add one?"), colleague.patch(path, json={"title": "Mine"}),
              colleague.patch(path, json={"shared": False}), colleague.delete(path),
              colleague.post(f"{path}/messages/{question}/retry")]
    assert [w.status_code for w in writes] == [403] * 5
    assert all(w.get_json()["error"]["code"] == "read_only" for w in writes)
    assert owner.get(path).get_json()["title"] == "Year-end close"
    assert len(owner.get(f"{path}/messages").get_json()["items"]) == 2


def test_another_organisation_gets_404_for_a_shared_conversation(app: Flask) -> None:
    owner, _, stranger = people(app)
    conversation = shared_conversation(owner)
    upload(owner, conversation, "ledger.csv", b"a,1\n")
    path = f"/api/conversations/{conversation}"
    answers = [stranger.get(path), stranger.get(f"{path}/messages"), stranger.get(f"{path}/files"),
               stranger.patch(path, json={"title": "x"}), stranger.delete(path), stranger.ask(conversation, "hi")]
    assert [a.status_code for a in answers] == [404] * 6
    assert stranger.get("/api/conversations?shared=true").get_json()["items"] == []


def test_unsharing_is_immediate_in_every_process(app_factory: Callable[..., Flask], redis_target: RedisTarget) -> None:
    one = app_factory(**redis_target.overrides())
    two = app_factory(**redis_target.overrides())
    owner, colleague, _ = people(one)
    elsewhere = Api(two.test_client(), colleague.token, colleague.user_id)
    conversation = shared_conversation(owner)
    path = f"/api/conversations/{conversation}"
    for _ in range(2):  # read twice in the other process: whatever it would cache, it has now
        assert elsewhere.get(path).status_code == 200
        assert elsewhere.get(f"{path}/messages").status_code == 200
        assert len(elsewhere.get("/api/conversations?shared=true").get_json()["items"]) == 1
    assert owner.patch(path, json={"shared": False}).status_code == 200
    assert elsewhere.get(path).status_code == 404
    assert elsewhere.get(f"{path}/messages").status_code == 404
    assert elsewhere.get("/api/conversations?shared=true").get_json()["items"] == []


def test_a_colleague_sees_new_messages_of_a_shared_conversation_at_once(app: Flask) -> None:
    owner, colleague, _ = people(app)
    conversation = shared_conversation(owner)
    path = f"/api/conversations/{conversation}/messages"
    assert len(colleague.get(path).get_json()["items"]) == 2
    owner.ask(conversation, "And the deferred revenue?")
    assert len(colleague.get(path).get_json()["items"]) == 4
