"""Nothing of one organisation is visible to another: every route of the URL map, aimed at another organisation's
ids, answers 404 (403 where a role decides first), and no list or search shows another organisation's rows."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask

from luca.extensions import db
from luca.models import Conversation, Membership, Message, UserSession
from tests.support.accounts import Browser, login, member
from tests.support.api import Api, basic, multipart, upload

SECRET = "zanzibarledger"  # a word only the victim organisation ever wrote


@dataclass
class Victim:
    """Rows of the organisation under attack."""

    owner: Api
    browser: Browser
    colleague_id: int
    conversation: str
    question: int
    file: int
    token_id: int
    session_id: int


def victim_rows(app: Flask) -> Victim:
    """An organisation with a shared conversation, a question and answer, a document, tokens, a session, a colleague."""
    owner_id, token = member(app, "owner@victim.example", org="Victim")
    colleague_id, _ = member(app, "colleague@victim.example", org="Victim")
    owner = Api(app.test_client(), token, owner_id)
    conversation = owner.new_conversation(title=f"{SECRET} books")["id"]
    assert owner.patch(f"/api/conversations/{conversation}", json={"shared": True}).status_code == 200
    question = owner.ask(conversation, f"What about the {SECRET}?").get_json()["message"]["id"]
    file = upload(owner, conversation, "ledger.csv", f"{SECRET},100\n".encode())["id"]
    browser = login(app, "owner@victim.example")
    with app.app_context():
        session_id = db.session.execute(sa.select(UserSession.id).where(UserSession.user_id == owner_id)
                                        ).scalars().first()
    token_id = owner.get("/api/tokens").get_json()["items"][0]["id"]
    return Victim(owner, browser, colleague_id, conversation, question, file, token_id, session_id)


def path_values(victim: Victim) -> dict[str, Any]:
    """The victim's id for each path parameter name a route may have."""
    return {"conversation_id": victim.conversation, "message_id": victim.question, "file_id": victim.file,
            "session_id": victim.session_id, "user_id": victim.colleague_id, "token_id": victim.token_id,
            "name": "database", "instance_number": 0, "per_page": 10, "page": 1}


BODIES: dict[str, Any] = {
    "conversations.update_conversation": {"title": "taken over", "shared": False},
    "conversations.send_message": {"content": "let me in"},
    "accounts.update_member": {"role": "admin"},
}


def request_for(endpoint: str, method: str) -> dict[str, Any]:
    """The body that gets a request past validation to the ownership check."""
    if endpoint == "conversations.upload_file":
        data, content_type = multipart({"file": ("x.csv", b"a,b\n")})
        return {"data": data, "content_type": content_type}
    if endpoint in BODIES:
        return {"json": BODIES[endpoint]}
    return {}


def test_every_route_with_another_organisations_ids_is_404_or_a_role_403(app: Flask) -> None:
    victim = victim_rows(app)
    attacker_id, attacker_token = member(app, "owner@attacker.example", org="Attacker")
    attacker = Api(app.test_client(), attacker_token, attacker_id)
    values = path_values(victim)
    walked, answers = 0, {}
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint.endswith("static"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: str(values.get(m.group(1), "x")), rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operator_only = rule.rule.startswith(("/api/admin", "/admin/rq"))
            headers = basic("owner@attacker.example", attacker_token) if rule.rule.startswith("/admin/") else {}
            response = attacker.client.open(path, method=method, headers=attacker.headers(headers),
                                            **request_for(rule.endpoint, method))
            answers[f"{method} {rule.rule}"] = response.status_code
            expected = 403 if operator_only else 404
            assert response.status_code == expected, (method, path, response.status_code, response.get_data()[:200])
            walked += 1
    assert walked >= 30  # every route with an id: the conversations, accounts, operator and dashboard ones
    assert {"DELETE /api/tokens/<int:token_id>", "PATCH /api/org/members/<int:user_id>",
            "DELETE /api/auth/sessions/<int:session_id>", "GET /api/files/<int:file_id>"} <= set(answers)

    # Nothing changed for the victim.
    conversation = victim.owner.get(f"/api/conversations/{victim.conversation}").get_json()
    assert conversation["title"] == f"{SECRET} books" and conversation["shared"] is True
    assert len(victim.owner.get(f"/api/conversations/{victim.conversation}/messages").get_json()["items"]) == 2
    assert victim.owner.get(f"/api/files/{victim.file}").status_code == 200
    assert victim.browser.get("/api/auth/session").status_code == 200
    with app.app_context():
        assert db.session.get(Membership, victim.colleague_id).role == "member"
        assert db.session.execute(sa.select(sa.func.count()).select_from(Message)).scalar_one() == 2
        assert db.session.execute(sa.select(sa.func.count()).select_from(Conversation)).scalar_one() == 1


def test_no_list_or_search_shows_another_organisations_rows(app: Flask) -> None:
    victim = victim_rows(app)
    _, attacker_token = member(app, "owner@attacker.example", org="Attacker")
    attacker = Api(app.test_client(), attacker_token, 0)
    # The victim's first question, word for word: deduplication must not hand over the victim's answer.
    answer = attacker.ask(attacker.new_conversation(title="our books")["id"], f"What about the {SECRET}?")
    assert answer.get_json()["answer"]["cached"] is False
    reads = ["/api/conversations", "/api/conversations?shared=true", f"/api/conversations?q={SECRET}",
             f"/api/search?q={SECRET}", "/api/org", "/api/org/members", "/api/usage?group_by=user", "/api/tokens",
             "/api/auth/sessions", "/api/me", "/api/auth/session"]
    for path in reads:
        response = attacker.get(path)
        assert response.status_code == 200, (path, response.get_json())
        text = response.get_data(as_text=True)
        assert "victim.example" not in text and victim.conversation not in text and "Victim" not in text, path
    titles = [c["title"] for c in attacker.get("/api/conversations?shared=true").get_json()["items"]]
    assert titles == []
