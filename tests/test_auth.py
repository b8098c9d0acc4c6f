"""Authentication, the users/tokens commands, admin-only endpoints and cross-user isolation."""
from __future__ import annotations

import pytest

from luca.extensions import db
from luca.models import ApiToken
from tests.conftest import Api


def test_missing_token_is_401_with_challenge(client) -> None:
    response = client.get("/api/conversations")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer luca_wrong", "Basic dXNlcjpwYXNz", "Bearer ", "luca_token"])
def test_wrong_token_is_401(client, api: Api, header: str) -> None:
    assert client.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_users_create_prints_a_working_token_last(runner, client) -> None:
    result = runner.invoke(args=["users", "create", "Carol@Example.com", "--name", "Carol"])
    assert result.exit_code == 0
    token = result.output.strip().splitlines()[-1]
    body = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body == {**body, "email": "carol@example.com", "name": "Carol", "is_admin": False}


def test_users_create_refuses_a_duplicate(runner, api: Api) -> None:
    result = runner.invoke(args=["users", "create", "alice@example.com"])
    assert result.exit_code != 0 and "already exists" in result.output


def test_tokens_are_stored_only_as_hashes(app, api: Api) -> None:
    with app.app_context():
        stored = db.session.query(ApiToken).one()
    assert api.token not in (stored.token_hash, stored.prefix, stored.name)
    assert len(stored.token_hash) == 64


def test_tokens_create_adds_a_second_working_token(runner, client, api: Api) -> None:
    result = runner.invoke(args=["tokens", "create", "alice@example.com"])
    second = result.output.strip().splitlines()[-1]
    assert second != api.token
    assert client.get("/api/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    assert api.get("/api/me").status_code == 200


def test_revoked_token_is_401(runner, api: Api) -> None:
    assert api.get("/api/me").status_code == 200
    result = runner.invoke(args=["tokens", "revoke", api.token])
    assert result.exit_code == 0, result.output
    assert api.get("/api/me").status_code == 401


def test_revoke_all_revokes_every_token_of_a_user(runner, client, api: Api) -> None:
    second = runner.invoke(args=["tokens", "create", "alice@example.com"]).output.strip().splitlines()[-1]
    runner.invoke(args=["tokens", "revoke", "--all", "alice@example.com"])
    for token in (api.token, second):
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_last_used_at_is_recorded(app, api: Api) -> None:
    api.get("/api/me")
    with app.app_context():
        assert db.session.query(ApiToken).one().last_used_at is not None


def test_admin_endpoints_are_403_for_non_admins(api: Api) -> None:
    response = api.get("/api/admin/users")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_admin_endpoints_are_401_without_token(client) -> None:
    assert client.get("/api/admin/users").status_code == 401


def test_admin_lists_users(make_api) -> None:
    admin = make_api("root@example.com", admin=True)
    make_api("someone@example.com")
    emails = [u["email"] for u in admin.get("/api/admin/users").get_json()["items"]]
    assert emails == ["root@example.com", "someone@example.com"]


def test_another_users_conversation_is_404_everywhere(api: Api, other_api: Api) -> None:
    theirs = other_api.new_conversation(title="Bob's books")
    other_api.ask(theirs["id"], "private question")
    path = f"/api/conversations/{theirs['id']}"
    responses = [
        api.get(path),
        api.patch(path, json={"title": "mine now"}),
        api.delete(path),
        api.get(f"{path}/messages"),
        api.ask(theirs["id"], "let me in"),
    ]
    assert [r.status_code for r in responses] == [404] * 5
    assert all(r.get_json()["error"]["code"] == "not_found" for r in responses)
    # Nothing changed for the owner.
    assert other_api.get(path).get_json()["title"] == "Bob's books"
    assert len(other_api.get(f"{path}/messages").get_json()["items"]) == 2


def test_another_users_conversations_are_not_listed(api: Api, other_api: Api) -> None:
    other_api.new_conversation(title="Bob's")
    mine = api.new_conversation(title="Alice's")
    assert [c["id"] for c in api.get("/api/conversations").get_json()["items"]] == [mine["id"]]


def test_unknown_conversation_is_404(api: Api) -> None:
    assert api.get("/api/conversations/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/api/conversations/not-a-uuid").status_code == 404
