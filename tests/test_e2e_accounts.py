"""Accounts in the browser: passwords, sign-up, sign-out, the reset and invitation links' pages, settings (sessions,
personal tokens), the organisation screen, and a conversation shared read-only with a colleague.

Headless Chromium (Playwright) against Luca under real gunicorn, as tests/test_e2e.py does (the tooling is
tests/support/browser.py), with SIGNUP=open. The firm "Firm" has an owner and a member with passwords; each
test signs in in browser contexts of its own, a second context being the colleague's browser.
"""
from __future__ import annotations

import re
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support import ROOT
from tests.support.accounts import PASSWORD
from tests.support.browser import Site, chromium, open_page, serve_site, sign_in_with_password
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, OidcProvider, install
from tests.support.processes import free_port

pytestmark = pytest.mark.slow  # the module's gunicorn and Chromium take several seconds to start
SCREENSHOTS = ROOT / "docs" / "screenshots"
OWNER = "ada@firm.example"
COLLEAGUE = "carl@firm.example"


def reset_link(site: Site, email: str) -> str:
    """The one-time password link `users reset-link` prints, as an operator would hand it over (on this site:
    without PUBLIC_URL and a request, the command cannot know the test server's port)."""
    link = urlsplit(site.command("users", "reset-link", email).strip().splitlines()[-1])
    return f"{site.base}{link.path}?{link.query}"


def choose_password(site: Site, email: str, password: str = PASSWORD) -> None:
    """Give a user a password through the reset link's API (the page itself is tested below)."""
    token = reset_link(site, email).rpartition("token=")[2]
    status, body = site.api("POST", "/api/auth/reset", "", {"token": token, "password": password})
    assert status == 204, body


def session_status(site: Site, cookie: str) -> int:
    """The status of GET /api/auth/session with this session cookie."""
    request = urllib.request.Request(site.base + "/api/auth/session", headers={"Cookie": f"luca_session={cookie}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


def new_user(site: Site, name: str) -> str:
    """A member of Firm with a password, for a test that needs a user nobody else signs in as; their email."""
    email = f"{name}-{uuid.uuid4().hex[:6]}@firm.example"
    site.command("users", "create", email, "--org", "Firm")
    choose_password(site, email)
    return email


@pytest.fixture(scope="module")
def site(provider_servers: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Luca with sign-up open; the owner of Firm and (made after her, so that both join one Firm) a member."""
    primary, _ = provider_servers
    users = {"owner": [OWNER, "--name", "Ada", "--org", "Firm"]}
    with serve_site(primary, tmp_path_factory.mktemp("e2e-accounts"), users, SIGNUP="open") as site:
        site.tokens["colleague"] = site.command("users", "create", COLLEAGUE, "--name", "Carl",
                                                "--org", "Firm").strip().splitlines()[-1]
        for email in (OWNER, COLLEAGUE):
            choose_password(site, email)
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def contexts(browser: Any, site: Site) -> Iterator[Any]:
    """Opens watched pages in contexts of their own (separate browsers: cookies and storage apart); after the
    test, none may have had a script error, a CSP violation or a dialog."""
    opened: list[tuple[Any, Any]] = []

    def new_page(**context_args: Any) -> Any:
        context, page, watch = open_page(browser, site, **context_args)
        opened.append((context, watch))
        return page

    try:
        yield new_page
        for _, watch in opened:
            assert watch.errors == [] and watch.dialogs == []
    finally:
        for context, _ in opened:
            context.close()


@pytest.fixture(scope="module")
def sso_site(provider_servers: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Luca with single sign-on through a real oidc-provider (tests/support/oidc), whose port is chosen first so
    that Luca can be started with its issuer and the provider with Luca's callback; Firm claims lovelace.example."""
    primary, _ = provider_servers
    install()
    tmp = tmp_path_factory.mktemp("e2e-sso")
    port = free_port()
    settings = {"OIDC_ISSUER": f"http://127.0.0.1:{port}", "OIDC_CLIENT_ID": CLIENT_ID,
                "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_NAME": "Lovelace ID"}
    with serve_site(primary, tmp, {"owner": [OWNER, "--org", "Firm"]}, **settings) as site:
        provider = OidcProvider(f"{site.base}/api/auth/oidc/callback", tmp / "oidc-provider.log", port=port).start()
        try:
            yield site
        finally:
            provider.stop()


def test_single_sign_on_creates_the_member_in_the_organisation_claiming_the_domain(browser: Any,
                                                                                  sso_site: Site) -> None:
    firm = re.search(r"organisation (\d+)", sso_site.command("users", "create", f"x-{uuid.uuid4().hex[:4]}@firm.example",
                                                             "--org", "Firm"))
    assert firm
    sso_site.command("orgs", "claim-domain", firm.group(1), "lovelace.example")
    context, page, watch = open_page(browser, sso_site)
    try:
        page.goto("/")
        page.get_by_role("link", name="Sign in with Lovelace ID").click()
        page.locator("input[name=login]").fill("ada")  # the provider's own login form, then its consent form
        page.locator("input[name=password]").fill("any password")
        page.locator("button[type=submit]").click()
        page.locator("button[type=submit]").click()
        expect(page.locator("#user-email")).to_have_text("ada@lovelace.example")
        assert page.url.rstrip("/") == sso_site.base
        members = sso_site.api("GET", "/api/org/members", sso_site.tokens["owner"])[1]["items"]
        assert {m["email"]: m["role"] for m in members}["ada@lovelace.example"] == "member"  # created in Firm
        page.locator("#new-conversation").click()  # the single sign-on session writes with its CSRF token
        expect(page.locator("#conversation-view")).to_be_visible()
        assert watch.errors == [] and watch.dialogs == []
    finally:
        context.close()


def test_a_reset_link_sets_the_password_and_the_user_signs_in_with_it(contexts: Any, site: Site) -> None:
    email = f"reset-{uuid.uuid4().hex[:6]}@firm.example"
    site.command("users", "create", email, "--org", "Firm")
    page = contexts()
    page.goto(reset_link(site, email))
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    assert "token" not in page.url  # the page took the token out of the address bar and the history
    page.get_by_label("New password", exact=True).fill("too short")
    page.get_by_role("button", name="Set the password").click()
    expect(page.locator("#account-error")).to_contain_text("12")
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", name="Your password is set")).to_be_visible()
    page.get_by_role("link", name="Sign in").click()

    form = page.locator("#signin-form")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill("not the password")
    form.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#signin-error")).to_contain_text("do not match")
    sign_in_with_password(page, email, PASSWORD)
    assert page.evaluate("() => localStorage.getItem('luca.token')") is None  # a cookie session, no token
    page.locator("#new-conversation").click()  # a cookie POST: it carries the session's X-CSRF-Token
    expect(page.locator("#conversation-view")).to_be_visible()
    page.wait_for_function("() => /^#\\/c\\//.test(location.hash)")
    expect(page.locator("#org-link")).to_be_hidden()  # a member manages no organisation


def test_sign_up_makes_the_owner_of_a_new_organisation(contexts: Any) -> None:
    page = contexts()
    page.goto("/")
    page.get_by_role("button", name="Create an account").click()
    form = page.locator("#signup-form")
    email = f"founder-{uuid.uuid4().hex[:6]}@new.example"
    form.get_by_label("Your name").fill("Fran")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Create account").click()
    expect(page.locator("#user-email")).to_have_text(email)
    page.get_by_role("link", name="Organisation").click()
    expect(page.locator("#org-summary")).to_contain_text("the owner")
    expect(page.locator("#member-rows tr")).to_have_count(1)


def test_sign_out_ends_the_session(contexts: Any, site: Site) -> None:
    page = contexts()
    sign_in_with_password(page, COLLEAGUE, PASSWORD)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "luca_session")
    assert session_status(site, cookie) == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin-form")).to_be_visible()
    assert session_status(site, cookie) == 401  # ended on the server, not only forgotten by the browser
    page.reload()
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#workspace")).to_be_hidden()


def test_a_colleague_is_invited_accepts_in_another_browser_and_is_removed(contexts: Any, site: Site) -> None:
    owner = contexts()
    owner.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in_with_password(owner, OWNER, PASSWORD)
    owner.get_by_role("link", name="Organisation").click()
    expect(owner.get_by_role("heading", name="Organisation")).to_be_visible()
    expect(owner.locator("#member-rows tr", has_text=COLLEAGUE)).to_be_visible()
    email = f"grace-{uuid.uuid4().hex[:6]}@firm.example"
    invite = owner.locator("#invite-form")
    invite.get_by_label("Email").fill(email)
    invite.get_by_label("Role").select_option("member")
    invite.get_by_role("button", name="Invite").click()
    link = owner.locator("#invite-link")
    expect(link).to_have_value(re.compile(r"/accept-invitation\?token=[\w-]{20,}$"))
    url = link.input_value()
    owner.get_by_role("button", name="Copy link").click()
    expect(owner.locator("#notice")).to_contain_text("Link copied")
    assert owner.evaluate("() => navigator.clipboard.readText()") == url
    owner.screenshot(path=str(SCREENSHOTS / "organisation.png"))

    colleague = contexts()  # the colleague's own browser
    colleague.goto(url)
    expect(colleague.get_by_role("heading", name="Join your organisation")).to_be_visible()
    colleague.get_by_label("Your name").fill("Grace <img src=x onerror=alert(1)>")
    colleague.get_by_label("New password", exact=True).fill(PASSWORD)
    colleague.get_by_role("button", name="Join").click()
    expect(colleague.locator("#user-email")).to_have_text(email)  # signed in as the new member
    expect(colleague.locator("#workspace")).to_be_visible()

    owner.reload()
    row = owner.locator("#member-rows tr", has_text=email)
    expect(row).to_contain_text("Grace <img src=x onerror=alert(1)>")  # a name is text, never markup
    assert owner.locator("#member-rows img").count() == 0
    row.get_by_label(f"Role of {email}").select_option("admin")
    expect(owner.locator("#notice")).to_contain_text(f"{email} is now an admin")
    members = site.api("GET", "/api/org/members", site.tokens["owner"])[1]["items"]
    assert {m["email"]: m["role"] for m in members}[email] == "admin"

    again = contexts()
    again.goto(url)
    again.get_by_label("New password", exact=True).fill(PASSWORD)
    again.get_by_role("button", name="Join").click()
    expect(again.locator("#account-error")).to_contain_text("used or has expired")

    row.get_by_role("button", name=f"Remove {email}").click()
    owner.locator("#confirm-dialog").get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0)
    colleague.locator("#new-conversation").click()  # removed: signed out everywhere at once
    expect(colleague.locator("#signin-error")).to_contain_text("Sign in again")


def test_a_shared_conversation_opens_read_only_for_a_colleague(contexts: Any, site: Site) -> None:
    question = f"Which payroll filings are due at year end? {uuid.uuid4().hex[:6]}"
    conversation_id = site.conversation_with_answer("owner", "Payroll year-end", question)
    owner = contexts()
    sign_in_with_password(owner, OWNER, PASSWORD)
    owner.goto(f"/#/c/{conversation_id}")
    share = owner.locator("#share-button")
    expect(share).to_have_attribute("aria-pressed", "false")
    share.click()
    expect(share).to_have_attribute("aria-pressed", "true")
    expect(share).to_have_text("Shared")
    expect(owner.locator(f'#conversation-list [data-id="{conversation_id}"] .shared-marker')).to_be_visible()

    colleague = contexts()
    sign_in_with_password(colleague, COLLEAGUE, PASSWORD)
    item = colleague.locator(f'#shared-list .conversation-item[data-id="{conversation_id}"]')
    expect(item).to_contain_text("Payroll year-end")
    expect(colleague.locator(f'#conversation-list [data-id="{conversation_id}"]')).to_have_count(0)
    item.locator("a").click()
    expect(colleague.locator("#message-list .message.from-user .message-text")).to_have_text(question)
    expect(colleague.locator("#message-list .message.from-luca .message-text")).to_have_text(
        f"[primary] You asked: {question}")
    expect(colleague.locator("#read-only-badge")).to_be_visible()
    for control in ("#composer", "#rename-button", "#pin-button", "#delete-button", "#share-button", "#attach"):
        expect(colleague.locator(control)).to_be_hidden()
    colleague.screenshot(path=str(SCREENSHOTS / "shared.png"))

    share.click()  # the owner takes it back
    expect(share).to_have_attribute("aria-pressed", "false")
    colleague.reload()
    expect(colleague.locator("#notice")).to_contain_text("does not exist any more")
    expect(item).to_have_count(0)
    expect(colleague.locator("#shared-status")).to_have_text("Nothing shared with you yet.")


def test_personal_tokens_are_made_shown_once_and_revoked_in_settings(contexts: Any, site: Site) -> None:
    page = contexts()
    sign_in_with_password(page, OWNER, PASSWORD)
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    expect(page.locator("#session-rows tr", has_text="this browser")).to_have_count(1)
    name = f"ledger export {uuid.uuid4().hex[:4]}"
    form = page.locator("#token-create-form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("write").uncheck()
    form.get_by_label("Expires").select_option("7")
    form.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret-value")
    expect(secret).to_have_value(re.compile(r"^luca_"))
    token = secret.input_value()
    row = page.locator("#token-rows tr", has_text=name)
    expect(row.locator("td").nth(2)).to_have_text("read")
    expect(row.locator("td").nth(4)).not_to_have_text("never")
    assert token[:12] in row.inner_text()  # listed by its prefix, never the whole secret
    assert token not in page.locator("#token-rows").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "settings.png"))

    assert site.api("GET", "/api/me", token)[0] == 200
    status, body = site.api("POST", "/api/conversations", token, {})
    assert status == 403 and body["error"]["code"] == "insufficient_scope"

    row.get_by_role("button", name=re.compile("^Revoke")).click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(f"Revoke {name}?")
    dialog.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    assert site.api("GET", "/api/me", token)[0] == 401
    page.reload()
    expect(page.locator("#token-secret")).to_be_hidden()


def test_ending_another_session_signs_that_browser_out(contexts: Any, site: Site) -> None:
    email = new_user(site, "traveller")
    laptop, phone = contexts(), contexts()
    sign_in_with_password(phone, email, PASSWORD)
    sign_in_with_password(laptop, email, PASSWORD)
    laptop.get_by_role("link", name="Settings").click()
    rows = laptop.locator("#session-rows tr")
    expect(rows).to_have_count(2)
    rows.get_by_role("button", name=re.compile("^End")).click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("this browser")
    phone.locator("#new-conversation").click()
    expect(phone.locator("#signin-error")).to_contain_text("Sign in again")
    expect(phone.locator("#workspace")).to_be_hidden()

