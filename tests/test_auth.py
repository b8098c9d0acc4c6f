"""Authentication, the users/tokens commands, admin-only endpoints and cross-user isolation."""
from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from luca.extensions import db
from luca.models import ApiToken, User
from tests.support.api import Api, create_user
from tests.support.services import RedisTarget


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
    result = runner.invoke(args=["tokens", "revoke", "-"], input=api.token)
    assert result.exit_code == 0, result.output
    assert api.get("/api/me").status_code == 401


def token_ids(app, email: str) -> list[int]:
    """The ids of a user's tokens, oldest first."""
    with app.app_context():
        return list(db.session.execute(select(ApiToken.id).join(User).where(User.email == email)
                                       .order_by(ApiToken.id)).scalars())


def test_tokens_list_shows_each_live_token_with_id_prefix_name_and_dates(app, runner, api: Api) -> None:
    laptop = runner.invoke(args=["tokens", "create", "alice@example.com", "--name", "laptop"])
    revoked = runner.invoke(args=["tokens", "create", "alice@example.com", "--name", "old"])
    runner.invoke(args=["tokens", "revoke", "-"], input=revoked.output.strip().splitlines()[-1])
    api.get("/api/me")  # the first token is used now
    first, second, third = token_ids(app, "alice@example.com")
    result = runner.invoke(args=["tokens", "list", "alice@example.com"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["id", "prefix", "name", "created", "last", "used"]
    rows = [line.split() for line in lines[1:-1]]
    assert [(int(row[0]), row[1], row[2]) for row in rows] == [
        (first, api.token[:12] + "…", "cli"),
        (second, laptop.output.strip().splitlines()[-1][:12] + "…", "laptop")]
    assert rows[0][-1] != "never" and rows[1][-1] == "never"
    assert lines[-1] == "2 live tokens of alice@example.com"
    assert str(third) not in [row[0] for row in rows]
    assert api.token not in result.output


def test_revoke_by_the_id_that_tokens_list_shows(app, runner, client, api: Api) -> None:
    second = runner.invoke(args=["tokens", "create", "alice@example.com"]).output.strip().splitlines()[-1]
    first_id, _ = token_ids(app, "alice@example.com")
    result = runner.invoke(args=["tokens", "revoke", "--id", str(first_id)])
    assert result.exit_code == 0, result.output
    assert "revoked 1 token" in result.output
    assert api.get("/api/me").status_code == 401
    assert client.get("/api/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_revoke_prompts_for_the_token_without_echoing_it(runner, api: Api) -> None:
    result = runner.invoke(args=["tokens", "revoke"], input=api.token + "\n")
    assert result.exit_code == 0, result.output
    assert api.token not in result.output
    assert api.get("/api/me").status_code == 401


def test_revoke_refuses_a_token_given_as_an_argument(runner, api: Api) -> None:
    result = runner.invoke(args=["tokens", "revoke", api.token])
    assert result.exit_code == 2
    assert "standard input" in result.output
    assert api.get("/api/me").status_code == 200


def test_revoke_of_an_unknown_token_fails(runner) -> None:
    result = runner.invoke(args=["tokens", "revoke", "-"], input="luca_nothing")
    assert result.exit_code == 1 and "no token matches" in result.output


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


def two_processes(app_factory: Callable[..., Flask], **overrides) -> tuple[Flask, Flask, Api]:
    """Two apps on one database (as two processes would be) and a user signed in to the second."""
    one, two = app_factory(CACHE_NEAR_TTL=1, **overrides), app_factory(CACHE_NEAR_TTL=1, **overrides)
    user_id, token = create_user(one, "revoked@example.com")
    return one, two, Api(two.test_client(), token, user_id)


def test_another_process_sharing_redis_refuses_a_revoked_token_within_the_near_ttl(
        app_factory, redis_target: RedisTarget) -> None:
    one, two, elsewhere = two_processes(app_factory, **redis_target.overrides())
    assert elsewhere.get("/api/me").status_code == 200  # cached in Redis and, for 1 s, in that process
    result = one.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=elsewhere.token)
    assert result.exit_code == 0, result.output
    time.sleep(1.5)
    assert elsewhere.get("/api/me").status_code == 401


def test_another_process_without_redis_refuses_a_revoked_token_within_the_near_ttl(app_factory) -> None:
    one, two, elsewhere = two_processes(app_factory)
    assert elsewhere.get("/api/me").status_code == 200  # cached in that process's memory only
    assert one.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=elsewhere.token).exit_code == 0
    time.sleep(1.5)
    assert elsewhere.get("/api/me").status_code == 401


def test_revoking_while_redis_is_unreachable_says_so_and_exits_non_zero(app_factory, own_redis) -> None:
    url, _start, kill = own_redis
    one, two, elsewhere = two_processes(app_factory, REDIS_URL=url, CACHE_FALLBACK_TTL=30)
    assert elsewhere.get("/api/me").status_code == 200
    kill()
    assert elsewhere.get("/api/me").status_code == 200  # from its memory, which it keeps for 1 s
    result = one.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=elsewhere.token)
    assert result.exit_code == 1
    assert "revoked in the database" in result.output and "Redis could not be reached" in result.output
    assert "300 seconds" in result.output
    with one.app_context():
        assert db.session.execute(select(ApiToken.revoked_at).where(ApiToken.user_id == elsewhere.user_id)
                                  ).scalar_one() is not None
    # Without Redis each process keeps its copy for CACHE_NEAR_TTL, not CACHE_FALLBACK_TTL.
    time.sleep(1.5)
    assert elsewhere.get("/api/me").status_code == 401


def test_revoking_again_once_redis_answers_finishes_the_job(app_factory, own_redis) -> None:
    url, start, kill = own_redis
    one, two, elsewhere = two_processes(app_factory, REDIS_URL=url)
    kill()
    assert one.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=elsewhere.token).exit_code == 1
    start()
    result = one.test_cli_runner().invoke(args=["tokens", "revoke", "-"], input=elsewhere.token)
    assert result.exit_code == 0, result.output
    assert "revoked 0 tokens (1 already revoked)" in result.output

