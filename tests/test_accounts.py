"""Accounts: sign-up, sign-in, sessions, passwords, reset links, throttling, CSRF, scoped tokens, organisations."""
from __future__ import annotations

import statistics
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from config import TestConfig
from luca import create_app
from luca.extensions import db
from luca.models import ApiToken, Conversation, Invitation, Membership, Organisation, PasswordReset, User, utcnow
from tests.support import ROOT
from tests.support.accounts import PASSWORD, Browser, login, member
from tests.support.api import Api
from tests.support.services import temporary_postgres_database
from tests.support.smtp import MailSink


def signup(app: Flask, email: str, password: str = PASSWORD, name: str = "") -> tuple[object, object]:
    """POST /api/auth/signup from a new client: (client, response)."""
    client = app.test_client()
    return client, client.post("/api/auth/signup", json={"email": email, "password": password, "name": name})


def count(app: Flask, model: type) -> int:
    """How many rows a table holds."""
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


# -- sign-up ---------------------------------------------------------------------------------------
def test_signup_is_by_invitation_unless_open(app) -> None:
    _, response = signup(app, "new@firm.example")
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "signup_closed"
    assert count(app, User) == 0


def test_open_signup_creates_the_owner_of_a_new_organisation_and_signs_in(app_factory) -> None:
    app = app_factory(SIGNUP="open")
    client, response = signup(app, "Ada@Firm.example", name="Ada")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["user"]["email"] == "ada@firm.example" and body["user"]["role"] == "owner" and body["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    assert "luca_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/api/auth/session").get_json() == body
    org = client.get("/api/org").get_json()
    assert org["role"] == "owner" and org["id"] == body["user"]["organisation_id"]


def test_the_session_cookie_is_secure_over_https(app_factory) -> None:
    app = app_factory(SIGNUP="open")
    response = app.test_client().post("/api/auth/signup", base_url="https://luca.example",
                                      json={"email": "a@firm.example", "password": PASSWORD})
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.sqlite_only
def test_the_session_cookie_is_secure_behind_a_trusted_https_proxy(app_factory) -> None:
    app = app_factory(SIGNUP="open", TRUSTED_PROXY_HOPS=1)
    response = app.test_client().post("/api/auth/signup", headers={"X-Forwarded-Proto": "https"},
                                      json={"email": "a@firm.example", "password": PASSWORD})
    assert response.status_code == 201 and "Secure" in response.headers["Set-Cookie"]


@pytest.mark.sqlite_only
def test_passwords_need_twelve_characters_and_emails_are_unique(app_factory) -> None:
    app = app_factory(SIGNUP="open")
    _, short = signup(app, "a@firm.example", password="eleven char")
    assert short.status_code == 422 and short.get_json()["error"]["code"] == "password_too_short"
    assert signup(app, "a@firm.example")[1].status_code == 201
    _, again = signup(app, "A@firm.example")
    assert again.status_code == 409
    assert count(app, User) == 1


def test_passwords_are_stored_as_argon2id_hashes(app_factory) -> None:
    app = app_factory(SIGNUP="open")
    signup(app, "a@firm.example")
    with app.app_context():
        stored = db.session.execute(sa.select(User.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


# -- sign-in, sessions, passwords ------------------------------------------------------------------
def test_login_logout_and_the_session_ends(app) -> None:
    member(app, "ada@firm.example")
    browser = login(app, "ada@firm.example")
    assert browser.get("/api/auth/session").status_code == 200
    assert browser.post("/api/auth/logout").status_code == 204
    assert browser.get("/api/auth/session").status_code == 401
    assert browser.get("/api/conversations").status_code == 401


@pytest.mark.sqlite_only
def test_unknown_email_and_wrong_password_answer_alike(app_factory) -> None:
    app = app_factory(RATE_LIMITS_ENABLED=False)
    member(app, "ada@firm.example")
    client = app.test_client()

    def attempt(email: str) -> tuple[int, object, float]:
        started = time.perf_counter()
        response = client.post("/api/auth/login", json={"email": email, "password": "not the password!"})
        return response.status_code, response.get_json(), time.perf_counter() - started

    pairs = [(attempt("ada@firm.example"), attempt("nobody@firm.example")) for _ in range(7)]  # interleaved
    wrong, unknown = [w for w, _ in pairs], [u for _, u in pairs]
    assert {(s, str(b)) for s, b, _ in wrong} == {(s, str(b)) for s, b, _ in unknown}
    assert wrong[0][0] == 401
    # Both hash a password (a dummy one for the unknown email): the same time within noise (a skipped
    # hash would make the unknown email's answer some fifty times faster).
    fast, slow = sorted([statistics.median(t for *_, t in wrong), statistics.median(t for *_, t in unknown)])
    assert fast > slow / 3


def test_sessions_are_listed_and_one_can_be_ended(app) -> None:
    member(app, "ada@firm.example")
    laptop, phone = login(app, "ada@firm.example"), login(app, "ada@firm.example")
    items = laptop.get("/api/auth/sessions").get_json()["items"]
    assert len(items) == 2 and [s["current"] for s in items] == [False, True]
    assert laptop.delete(f"/api/auth/sessions/{items[0]['id']}").status_code == 204
    assert phone.get("/api/auth/session").status_code == 401
    assert laptop.get("/api/auth/session").status_code == 200
    assert laptop.delete(f"/api/auth/sessions/{items[0]['id']}").status_code == 404


def test_a_password_change_ends_the_other_sessions(app) -> None:
    member(app, "ada@firm.example")
    here, elsewhere = login(app, "ada@firm.example"), login(app, "ada@firm.example")
    wrong = here.post("/api/auth/password", json={"current": "not it at all", "new": "a new long password"})
    assert wrong.status_code == 403
    assert here.post("/api/auth/password", json={"current": PASSWORD, "new": "a new long password"}).status_code == 204
    assert here.get("/api/auth/session").status_code == 200
    assert elsewhere.get("/api/auth/session").status_code == 401
    assert app.test_client().post("/api/auth/login", json={"email": "ada@firm.example",
                                                           "password": PASSWORD}).status_code == 401
    login(app, "ada@firm.example", "a new long password")


def test_a_reset_link_works_once(app, runner) -> None:
    member(app, "ada@firm.example")
    result = runner.invoke(args=["users", "reset-link", "ada@firm.example"])
    assert result.exit_code == 0 and "valid 60 minutes" in result.output
    token = result.output.strip().splitlines()[-1].rpartition("token=")[2]
    browser = login(app, "ada@firm.example")
    client = app.test_client()
    assert client.post("/api/auth/reset", json={"token": token, "password": "chosen again, long"}).status_code == 204
    assert browser.get("/api/auth/session").status_code == 401  # every session ends with a reset
    again = client.post("/api/auth/reset", json={"token": token, "password": "and once more, long"})
    assert again.status_code == 400 and again.get_json()["error"]["code"] == "invalid_token"
    login(app, "ada@firm.example", "chosen again, long")


def test_a_reset_link_expires_after_an_hour(app, runner) -> None:
    member(app, "ada@firm.example")
    token = runner.invoke(args=["users", "reset-link", "ada@firm.example"]).output.strip().rpartition("token=")[2]
    with app.app_context():
        reset = db.session.execute(sa.select(PasswordReset).order_by(PasswordReset.id.desc())).scalars().first()
        assert timedelta(minutes=59) < reset.expires_at - reset.created_at <= timedelta(hours=1)
        db.session.execute(sa.update(PasswordReset).where(PasswordReset.id == reset.id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = app.test_client().post("/api/auth/reset", json={"token": token, "password": "too late, I think"})
    assert response.status_code == 400
    login(app, "ada@firm.example")  # the old password still works


@pytest.mark.sqlite_only
def test_forgot_answers_the_same_for_known_and_unknown_emails_and_needs_no_mail_server(app) -> None:
    member(app, "ada@firm.example")
    client = app.test_client()
    known = client.post("/api/auth/forgot", json={"email": "ada@firm.example"})
    unknown = client.post("/api/auth/forgot", json={"email": "nobody@firm.example"})
    assert (known.status_code, known.data) == (unknown.status_code, unknown.data) == (202, b"")
    assert count(app, PasswordReset) == 1  # only set_password's link: without MAIL_URL nothing is made


@pytest.mark.sqlite_only
def test_forgot_mails_a_working_reset_link_when_mail_url_is_set(app_factory) -> None:
    with MailSink() as sink:
        app = app_factory(MAIL_URL=sink.url, PUBLIC_URL="https://luca.example")
        member(app, "ada@firm.example")
        client = app.test_client()
        assert client.post("/api/auth/forgot", json={"email": "Ada@firm.example"}).status_code == 202
        assert client.post("/api/auth/forgot", json={"email": "nobody@firm.example"}).status_code == 202
        deadline = time.monotonic() + 5
        while not sink.messages and time.monotonic() < deadline:  # sent on a thread, after the answer
            time.sleep(0.05)
        time.sleep(0.2)
    assert [m["To"] for m in sink.messages] == ["ada@firm.example"]
    text = sink.messages[0].get_content()
    token = text.split("https://luca.example/reset-password?token=")[1].split()[0]
    assert client.post("/api/auth/reset", json={"token": token, "password": "from the mail, long"}).status_code == 204
    login(app, "ada@firm.example", "from the mail, long")


# -- throttling ------------------------------------------------------------------------------------
def attempt(app: Flask, email: str, password: str, address: str) -> object:
    """One sign-in from address."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client.post("/api/auth/login", json={"email": email, "password": password})


@pytest.mark.sqlite_only
def test_failed_logins_are_throttled_per_address(app_factory) -> None:
    app = app_factory(RATE_LIMIT_AUTH_FAILURES="3 per minute", RATE_LIMIT_LOGIN_FAILURES="100 per minute")
    member(app, "ada@firm.example")
    member(app, "bob@firm.example")
    statuses = [attempt(app, f"guess{i}@firm.example", "wrong password!", "10.0.0.9").status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    refused = attempt(app, "bob@firm.example", PASSWORD, "10.0.0.9")  # a guessing address gets no answer
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "RATE_LIMIT" not in refused.get_json()["error"]["message"]
    assert attempt(app, "bob@firm.example", PASSWORD, "10.0.0.10").status_code == 200


@pytest.mark.sqlite_only
def test_failed_logins_are_throttled_per_account_but_the_right_password_elsewhere_signs_in(app_factory) -> None:
    app = app_factory(RATE_LIMIT_AUTH_FAILURES="100 per minute", RATE_LIMIT_LOGIN_FAILURES="3 per minute")
    member(app, "ada@firm.example")
    statuses = [attempt(app, "ada@firm.example", "wrong password!", "10.0.0.9").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # The guesser is refused even with the right password; another address guessing gets 429 too...
    assert attempt(app, "ada@firm.example", PASSWORD, "10.0.0.9").status_code == 429
    assert attempt(app, "ada@firm.example", "another guess!", "10.0.0.11").status_code == 429
    # ... but Ada, from an address that has not been failing, signs in.
    assert attempt(app, "ada@firm.example", PASSWORD, "10.0.0.10").status_code == 200


# -- CSRF ------------------------------------------------------------------------------------------
def test_a_cookie_write_without_the_csrf_token_is_403_and_writes_nothing(app) -> None:
    _, token = member(app, "ada@firm.example")
    browser = login(app, "ada@firm.example")
    refused = browser.post("/api/conversations", json={"title": "Q3"}, csrf=False)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "csrf_failed"
    wrong = browser.post("/api/conversations", json={"title": "Q3"}, headers={"X-CSRF-Token": "guessed"}, csrf=False)
    assert wrong.status_code == 403
    assert count(app, Conversation) == 0
    assert browser.post("/api/conversations", json={"title": "Q3"}).status_code == 201
    # A bearer token needs none.
    assert Api(app.test_client(), token, 0).post("/api/conversations", json={"title": "Q4"}).status_code == 201
    assert count(app, Conversation) == 2


# -- tokens ----------------------------------------------------------------------------------------
def test_personal_tokens_are_scoped_shown_once_and_revocable(app) -> None:
    member(app, "ada@firm.example")
    browser = login(app, "ada@firm.example")
    conversation = browser.post("/api/conversations", json={"title": "VAT"}).get_json()["id"]
    created = browser.post("/api/tokens", json={"name": "reader", "scopes": ["read"], "expires_in_days": 30})
    assert created.status_code == 201
    body = created.get_json()
    assert body["scopes"] == ["read"] and body["token"].startswith("luca_") and body["expires_at"]
    reader = Api(app.test_client(), body["token"], 0)
    assert reader.get("/api/conversations").status_code == 200
    refused = reader.ask(conversation, "What is VAT?")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "insufficient_scope"
    listed = {t["name"]: t for t in browser.get("/api/tokens").get_json()["items"]}
    assert listed["reader"]["last_used_at"] is not None and "token" not in listed["reader"]
    assert listed["cli"]["scopes"] == ["read", "write", "admin"]  # made by the CLI: every scope
    assert browser.delete(f"/api/tokens/{body['id']}").status_code == 204
    assert reader.get("/api/conversations").status_code == 401


def test_an_expired_token_is_401(app, api: Api) -> None:
    with app.app_context():
        db.session.execute(sa.update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = api.get("/api/conversations")
    assert response.status_code == 401 and "expired" in response.get_json()["error"]["message"]


@pytest.mark.sqlite_only
def test_a_token_cannot_make_a_token_with_more_scopes(app, api: Api) -> None:
    writer = Api(app.test_client(), api.post("/api/tokens", json={"scopes": ["read", "write"]}).get_json()["token"], 0)
    assert writer.post("/api/tokens", json={"scopes": ["admin"]}).status_code == 403
    assert writer.post("/api/tokens", json={"scopes": ["read"]}).status_code == 201
    assert writer.get("/api/org/members").status_code == 403  # an org admin's token without the admin scope


# -- organisations ---------------------------------------------------------------------------------
def invite(owner: Browser, email: str, role: str = "member") -> dict:
    """POST /api/org/invitations; the 201 body."""
    response = owner.post("/api/org/invitations", json={"email": email, "role": role})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_invitation_creates_a_member_once(app) -> None:
    member(app, "owner@firm.example")
    owner = login(app, "owner@firm.example")
    invitation = invite(owner, "Colleague@Firm.example")
    assert invitation["url"].endswith("/accept-invitation?token=" + invitation["token"])
    client = app.test_client()
    accepted = client.post("/api/auth/accept-invitation",
                           json={"token": invitation["token"], "name": "Col", "password": PASSWORD})
    assert accepted.status_code == 201, accepted.get_json()
    user = accepted.get_json()["user"]
    assert (user["email"], user["role"], user["organisation_id"]) == (
        "colleague@firm.example", "member", owner.user["organisation_id"])
    again = app.test_client().post("/api/auth/accept-invitation",
                                   json={"token": invitation["token"], "name": "X", "password": PASSWORD})
    assert again.status_code == 400
    members = owner.get("/api/org/members").get_json()["items"]
    assert [(m["email"], m["role"]) for m in members] == [("owner@firm.example", "owner"),
                                                         ("colleague@firm.example", "member")]


def test_an_invitation_is_valid_for_seven_days(app) -> None:
    member(app, "owner@firm.example")
    invitation = invite(login(app, "owner@firm.example"), "late@firm.example")
    with app.app_context():
        row = db.session.execute(sa.select(Invitation)).scalar_one()
        assert row.expires_at - row.created_at == timedelta(days=7)
        db.session.execute(sa.update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = app.test_client().post("/api/auth/accept-invitation",
                                      json={"token": invitation["token"], "password": PASSWORD})
    assert response.status_code == 400
    assert count(app, User) == 1


def test_roles_decide_who_manages_members(app) -> None:
    member(app, "owner@firm.example", org="Firm")
    helper_id, _ = member(app, "helper@firm.example", org="Firm")
    staff_id, staff_token = member(app, "staff@firm.example", org="Firm")
    owner, staff = login(app, "owner@firm.example"), login(app, "staff@firm.example")
    assert staff.get("/api/org").get_json()["role"] == "member"
    assert staff.get("/api/org/members").status_code == 403
    assert staff.post("/api/org/invitations", json={"email": "x@firm.example"}).status_code == 403
    assert staff.patch("/api/org", json={"name": "Mine"}).status_code == 403
    assert owner.patch(f"/api/org/members/{helper_id}", json={"role": "admin"}).status_code == 200
    helper = login(app, "helper@firm.example")
    assert helper.get("/api/org/members").status_code == 200
    assert helper.post("/api/org/invitations", json={"email": "boss@firm.example", "role": "owner"}).status_code == 403
    assert helper.patch(f"/api/org/members/{owner.user['id']}", json={"role": "member"}).status_code == 403
    assert helper.delete(f"/api/org/members/{helper_id}").status_code == 403  # not oneself
    assert helper.patch("/api/org", json={"name": "Firm & Co"}).get_json()["name"] == "Firm & Co"
    # Removal ends the member's sessions and tokens at once, and they can no longer sign in.
    assert helper.delete(f"/api/org/members/{staff_id}").status_code == 204
    assert staff.get("/api/auth/session").status_code == 401
    assert Api(app.test_client(), staff_token, staff_id).get("/api/me").status_code == 401
    assert attempt(app, "staff@firm.example", PASSWORD, "10.0.0.5").status_code == 401
    assert [m["email"] for m in owner.get("/api/org/members").get_json()["items"]] == [
        "owner@firm.example", "helper@firm.example"]


def test_org_admins_see_their_members_usage(app) -> None:
    owner_id, token = member(app, "owner@firm.example", org="Firm")
    _, staff_token = member(app, "staff@firm.example", org="Firm")
    api = Api(app.test_client(), token, owner_id)
    api.ask(api.new_conversation()["id"], "What is VAT?")
    usage = api.get("/api/usage?group_by=user").get_json()
    assert [(item["group"], item["answers"]) for item in usage["items"]] == [(str(owner_id), 1)]
    assert Api(app.test_client(), staff_token, 0).get("/api/usage").status_code == 403  # a member sees their own


def test_a_role_change_applies_at_once_despite_the_credential_cache(app) -> None:
    member(app, "owner@firm.example", org="Firm")
    helper_id, helper_token = member(app, "helper@firm.example", org="Firm")
    helper = Api(app.test_client(), helper_token, helper_id)
    assert helper.get("/api/org/members").status_code == 403  # cached now, as a member
    owner = login(app, "owner@firm.example")
    assert owner.patch(f"/api/org/members/{helper_id}", json={"role": "admin"}).status_code == 200
    assert helper.get("/api/org/members").status_code == 200


# -- the migration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_migration_gives_existing_users_an_organisation_and_tokens_every_scope(engine: str,
                                                                                   tmp_path: Path) -> None:
    def run(url: str) -> None:
        app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"), revision="0003")
            db.session.execute(sa.text("INSERT INTO users (email, name, is_admin, created_at) VALUES "
                                       "('demo@luca.local', 'Demo', true, CURRENT_TIMESTAMP), "
                                       "('old@firm.example', '', false, CURRENT_TIMESTAMP)"))
            db.session.execute(sa.text("INSERT INTO api_tokens (user_id, token_hash, prefix, name, created_at) "
                                       "VALUES (2, 'h', 'luca_', 'cli', CURRENT_TIMESTAMP)"))
            db.session.commit()
            upgrade(directory=str(ROOT / "migrations"))
            memberships = db.session.execute(sa.select(Membership.user_id, Membership.organisation_id,
                                                       Membership.role).order_by(Membership.user_id)).all()
            assert [(m.user_id, m.role) for m in memberships] == [(1, "owner"), (2, "owner")]
            assert memberships[0].organisation_id != memberships[1].organisation_id
            assert db.session.execute(sa.select(ApiToken.scopes)).scalar_one() == "read,write,admin"
            db.session.remove()
            db.engine.dispose()

    if engine == "sqlite":
        run(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        with temporary_postgres_database("luca_accounts") as url:
            run(url)



@pytest.mark.sqlite_only
def test_the_openapi_document_marks_only_the_sign_in_endpoints_public(client) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    public = sorted(f"{method.upper()} {path}" for path, operations in paths.items()
                    for method, operation in operations.items() if operation.get("security") == [])
    assert public == ["POST /api/auth/accept-invitation", "POST /api/auth/forgot", "POST /api/auth/login",
                      "POST /api/auth/reset", "POST /api/auth/signup"]


def test_ids_past_32_bits_are_404(app, api: Api) -> None:
    big = 2**40
    answers = [api.delete(f"/api/auth/sessions/{big}"), api.delete(f"/api/tokens/{big}"),
               api.patch(f"/api/org/members/{big}", json={"role": "member"}), api.delete(f"/api/org/members/{big}")]
    assert [a.status_code for a in answers] == [404] * 4


# -- email domains for single sign-on: claimed by an operator, never by the firm -------------------
def organisation_domains(app: Flask) -> dict[int, str | None]:
    """Each organisation's claimed domain."""
    with app.app_context():
        return {org_id: domain for org_id, domain in db.session.execute(sa.select(Organisation.id, Organisation.domain))}


def test_an_operator_claims_a_domain_another_organisation_cannot_take(app, runner) -> None:
    member(app, "owner@firm.example", org="Firm")
    member(app, "owner@rival.example", org="Rival")
    firm, rival = sorted(organisation_domains(app))
    claimed = runner.invoke(args=["orgs", "claim-domain", str(firm), "Firm.Example"])
    assert claimed.exit_code == 0, claimed.output
    assert organisation_domains(app) == {firm: "firm.example", rival: None}

    taken = runner.invoke(args=["orgs", "claim-domain", str(rival), "firm.example"])
    assert taken.exit_code != 0 and f"claimed by organisation {firm}" in taken.output
    for bad in (["orgs", "claim-domain", str(rival), "not a domain"], ["orgs", "claim-domain", "99999", "x.example"]):
        assert runner.invoke(args=bad).exit_code != 0
    assert organisation_domains(app) == {firm: "firm.example", rival: None}

    assert runner.invoke(args=["orgs", "release-domain", str(firm)]).exit_code == 0
    assert runner.invoke(args=["orgs", "claim-domain", str(rival), "firm.example"]).exit_code == 0
    assert organisation_domains(app) == {firm: None, rival: "firm.example"}


def test_a_firm_admin_cannot_claim_a_domain_through_the_api(app) -> None:
    member(app, "owner@firm.example")
    owner = login(app, "owner@firm.example")
    response = owner.patch("/api/org", json={"name": "Firm", "domain": "firm.example"})
    assert response.status_code in (400, 422), response.get_json()
    assert set(organisation_domains(app).values()) == {None}
