"""The web pages end to end: headless Chromium (Playwright) against Luca under real gunicorn.

One gunicorn (SQLite file, no Redis: jobs run on its thread pool) and one browser serve the
whole module; each test gets a fresh browser context. The "primary" local test provider answers
"[primary] You asked: <question>", word by word. Screenshots of the main screens are written to
docs/screenshots/ on every run.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.browser import (WAIT_MS, Browsing, Servers, Site, ask, last_answer, new_conversation, open_page,
                                   serve_site, sign_in_with_token, unique, wait_for_answer)
from tests.support.documents import make_pdf
from tests.support.processes import flask_command

pytestmark = pytest.mark.slow  # the module's gunicorn and Chromium take about 8 s to start


@pytest.fixture(scope="module")
def site(provider_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Luca in a real gunicorn on a migrated SQLite file, answering with the primary test provider."""
    primary, _ = provider_servers
    users = {"alice": ["alice@example.com", "--name", "Alice"], "bob": ["bob@example.com"],
             "admin": ["ops@example.com", "--admin"]}
    with serve_site(primary, tmp_path_factory.mktemp("e2e"), users) as site:
        yield site


def test_sign_in_then_a_streamed_answer_grows_token_by_token(browsing: Browsing, site: Site, servers: Servers,
                                                            screenshots: Path) -> None:
    page, _ = browsing
    primary, _ = servers
    primary.configure(chunk_delay_ms=60)
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to Luca")).to_be_visible()
    page.screenshot(path=str(screenshots / "signin.png"))
    page.get_by_role("button", name="Use an API token").click()
    page.get_by_label("API token", exact=True).fill("luca_not-a-real-token")
    page.get_by_role("button", name="Sign in with the token").click()
    expect(page.locator("#signin-error")).to_contain_text("not valid")

    sign_in_with_token(page, site.tokens["alice"])
    expect(page.locator("#user-email")).to_have_text("alice@example.com")
    assert page.evaluate("() => localStorage.getItem('luca.token')") == site.tokens["alice"]
    expect(page.locator("#admin-link")).to_be_hidden()
    new_conversation(page)

    box = page.get_by_label("Your question")
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    assert box.input_value() == "first line\nsecond line"  # Shift+Enter is a new line, not a send
    question = f"What is the corporate tax rate for a small company {unique('ref')}?"
    box.fill(question)
    box.press("Enter")

    streaming = page.locator("#message-list .message.from-luca.streaming .message-text")
    streaming.wait_for()
    samples: list[str] = []
    deltas = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = page.evaluate("""() => {
            const node = document.querySelector('#message-list .message.from-luca.streaming');
            return node ? [node.querySelector('.message-text').textContent, Number(node.dataset.deltas)] : null;
        }""")
        if seen is None:
            break
        text, deltas = seen[0], max(deltas, seen[1])
        if text and (not samples or text != samples[-1]):
            samples.append(text)
        time.sleep(0.02)
    assert len(samples) >= 3, samples  # the text grew while the answer streamed
    assert all(later.startswith(earlier) and len(later) > len(earlier)
               for earlier, later in pairwise(samples))
    assert deltas >= 3
    wait_for_answer(page, question)
    meta = last_answer(page).locator(".message-meta")
    expect(meta.locator(".meta-provider")).to_have_text("primary")
    expect(meta.locator(".meta-model")).to_have_text("primary-model")
    expect(page.locator("#message-list .message.from-user .message-text").last).to_have_text(question)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token", exact=True)).to_be_visible()  # the form it signed in with stays open
    assert page.evaluate("() => localStorage.getItem('luca.token')") is None


def test_the_generated_title_appears_in_the_list_without_a_reload(browsing: Browsing, site: Site, servers: Servers,
                                                                  screenshots: Path) -> None:
    page, _ = browsing
    primary, _ = servers
    primary.configure(chunk_delay_ms=20)
    sign_in_with_token(page, site.tokens["alice"])
    conversation_id = new_conversation(page)
    item = page.locator(f'.conversation-item[data-id="{conversation_id}"] .conversation-name')
    expect(item).to_have_text("New conversation")
    page.evaluate("() => { window.notReloaded = true; }")
    question = f"How should I depreciate a delivery van bought for 30,000? ({unique('van')})"
    ask(page, question)
    wait_for_answer(page, question)
    expect(item).to_have_text(re.compile(r"^\[primary\]"))
    expect(page.locator("#conversation-title")).to_have_text(re.compile(r"^\[primary\]"))
    assert page.evaluate("() => window.notReloaded") is True
    page.screenshot(path=str(screenshots / "chat.png"))


def test_the_same_question_in_a_second_conversation_is_served_from_cache(browsing: Browsing, site: Site,
                                                                         servers: Servers) -> None:
    page, _ = browsing
    primary, _ = servers
    sign_in_with_token(page, site.tokens["alice"])
    question = f"What is the VAT registration threshold? ({unique('dedup')})"
    for _ in range(2):
        new_conversation(page)
        ask(page, question)
        wait_for_answer(page, question)
    asked = [r for r in primary.requests if r["messages"][-1]["content"] == question]
    assert len(asked) == 1, asked  # the browser's send does not opt out of deduplication
    expect(last_answer(page).locator(".meta-cached")).to_have_text("served from cache")


def test_a_question_can_be_retried_when_the_providers_are_down(browsing: Browsing, site: Site,
                                                               servers: Servers) -> None:
    page, _ = browsing
    primary, _ = servers
    sign_in_with_token(page, site.tokens["alice"])
    new_conversation(page)
    primary.configure(status=500)
    question = f"What is a trial balance? {unique('tb')}"
    ask(page, question)
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    expect(page.locator("#message-list .retry-reason")).to_contain_text("no AI provider can answer right now")
    expect(page.locator("#message-list .message.from-luca")).to_have_count(0)
    primary.configure(status=None)
    retry.click()
    wait_for_answer(page, question)
    expect(retry).to_have_count(0)
    expect(page.locator("#message-list .message.from-user")).to_have_count(1)


def test_an_uploaded_pdf_is_processed_until_ready(browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, _ = browsing
    sign_in_with_token(page, site.tokens["alice"])
    conversation_id = new_conversation(page)
    page.locator("#file-input").set_input_files(files=[{
        "name": "trial-balance.pdf", "mimeType": "application/pdf",
        "buffer": make_pdf(["Trial balance 2024: debits 1000, credits 1000", "Notes to the accounts"]),
    }])
    ready = page.locator("#file-list .file.status-ready")
    expect(ready).to_contain_text("trial-balance.pdf")
    expect(ready.locator(".file-status")).to_have_text("ready")
    expect(ready.locator(".file-details")).to_contain_text("2 pages")

    page.locator("#file-input").set_input_files(files=[{
        "name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\nthis is not really a PDF\n",
    }])
    failed = page.locator("#file-list .file.status-failed")
    expect(failed).to_contain_text("scan.pdf")
    expect(failed.locator(".file-error")).not_to_be_empty()
    page.screenshot(path=str(screenshots / "upload.png"))

    status, files = site.api("GET", f"/api/conversations/{conversation_id}/files", site.tokens["alice"])
    assert status == 200 and [f["status"] for f in files["items"]] == ["ready", "failed"]
    page.reload()  # the list of documents comes back from the API
    expect(page.locator("#file-list .file")).to_have_count(2)


def test_search_shows_marked_snippets_and_opens_the_result(browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, _ = browsing
    sign_in_with_token(page, site.tokens["alice"])
    word = unique("zebracorn")
    conversation_id = new_conversation(page)
    question = f"Can I deduct the {word} subscription as a business expense?"
    ask(page, question)
    wait_for_answer(page, question)
    new_conversation(page)  # move away, so opening the result is visible

    page.get_by_label("Search conversations").fill(word)
    page.get_by_label("Search conversations").press("Enter")
    expect(page.locator("#search-status")).to_contain_text("2 results")  # the question and its answer
    hits = page.locator("#search-list .search-hit")
    expect(hits.first).to_be_visible()
    expect(page.locator("#search-list mark").first).to_have_text(re.compile(word, re.IGNORECASE))
    page.screenshot(path=str(screenshots / "search.png"))

    page.locator(f'#search-list a[href="#/c/{conversation_id}"]').first.click()
    page.wait_for_function(f"() => location.hash === '#/c/{conversation_id}'")
    expect(page.locator("#message-list .message.from-user .message-text").first).to_have_text(question)

    page.get_by_label("Search conversations").fill(f"nothing{uuid.uuid4().hex[:8]}")
    page.get_by_label("Search conversations").press("Enter")
    expect(page.locator("#search-status")).to_contain_text("Nothing matches")


def test_typing_in_search_while_a_conversation_opens_keeps_the_focus(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    sign_in_with_token(page, site.tokens["alice"])
    held: list[Any] = []
    page.route("**/api/conversations/*/messages*", lambda route: held.append(route))  # held until the user types
    page.locator("#new-conversation").click()
    deadline = time.monotonic() + WAIT_MS / 1000
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the new conversation never asked for its history"
    search = page.get_by_label("Search conversations")
    search.fill("invoice")
    for route in held:
        route.continue_()
    page.unroute("**/api/conversations/*/messages*")
    expect(page.get_by_text("No messages yet")).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(search).to_be_focused()
    expect(search).to_have_value("invoice")
    expect(page.get_by_label("Your question")).to_have_value("")


def test_rename_pin_and_delete_a_conversation(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    sign_in_with_token(page, site.tokens["alice"])
    conversation_id = new_conversation(page)
    item = page.locator(f'.conversation-item[data-id="{conversation_id}"]')

    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Conversation title").fill("Quarterly VAT return")
    page.get_by_label("Conversation title").press("Enter")
    expect(page.locator("#conversation-title")).to_have_text("Quarterly VAT return")
    expect(item.locator(".conversation-name")).to_have_text("Quarterly VAT return")

    page.get_by_role("button", name="Pin", exact=True).click()
    expect(page.get_by_role("button", name="Unpin")).to_have_attribute("aria-pressed", "true")
    expect(item.locator(".pin-marker")).to_be_visible()
    page.reload()
    expect(page.locator(".conversation-item").first).to_have_attribute("data-id", conversation_id)
    expect(page.locator("#conversation-title")).to_have_text("Quarterly VAT return")
    page.get_by_role("button", name="Unpin").click()
    expect(item.locator(".pin-marker")).to_have_count(0)

    page.get_by_role("button", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(item).to_have_count(1)
    page.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(item).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    assert site.api("GET", f"/api/conversations/{conversation_id}", site.tokens["alice"])[0] == 404


def test_message_markup_is_shown_as_text_never_run(browsing: Browsing, site: Site) -> None:
    page, watch = browsing
    markup = "<img src=x onerror=alert(1)>"
    sign_in_with_token(page, site.tokens["alice"])
    new_conversation(page)
    question = f"{markup} {unique('xss')}"
    ask(page, question)
    wait_for_answer(page, question)
    expect(page.locator("#message-list .message.from-user .message-text").last).to_have_text(question)
    expect(page.get_by_text(f"[primary] You asked: {markup}", exact=False)).to_be_visible()
    assert page.locator("#message-list img").count() == 0
    page.reload()  # the history is rendered the same way
    expect(page.locator("#message-list .message-text").first).to_have_text(question)
    assert page.locator("#message-list img").count() == 0

    page.get_by_label("Search conversations").fill("onerror")
    page.get_by_label("Search conversations").press("Enter")
    snippet = page.locator("#search-list .hit-snippet").first
    expect(snippet).to_contain_text("<img src=x")
    expect(snippet.locator("mark").first).to_be_visible()
    assert page.locator("#search-list img").count() == 0
    page.wait_for_timeout(300)
    assert watch.dialogs == []


def test_an_expired_token_sends_the_user_back_to_sign_in(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    sign_in_with_token(page, site.tokens["alice"])
    page.evaluate("() => localStorage.setItem('luca.token', 'luca_revoked-or-mistyped')")
    page.locator("#new-conversation").click()
    expect(page.locator("#signin-error")).to_contain_text("Sign in again")
    expect(page.locator("#workspace")).to_be_hidden()
    assert page.evaluate("() => localStorage.getItem('luca.token')") is None


def test_the_history_pages_backwards_as_you_scroll_up(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    token = site.tokens["bob"]
    status, conversation = site.api("POST", "/api/conversations", token, {"title": "A long ledger discussion"})
    assert status == 201
    tag = unique("entry")
    for number in range(1, 17):  # 32 messages: more than the page's first 30
        status, body = site.api("POST", f"/api/conversations/{conversation['id']}/messages", token,
                                {"content": f"Ledger question {number} {tag}"})
        assert status == 201, body
    sign_in_with_token(page, token)
    page.locator(f'.conversation-item[data-id="{conversation["id"]}"] a').click()
    messages = page.locator("#message-list .message")
    expect(messages).to_have_count(30)
    expect(messages.last.locator(".message-text")).to_have_text(f"[primary] You asked: Ledger question 16 {tag}")
    assert page.locator("#messages").evaluate("node => node.scrollTop > 0")  # opened at the newest message
    page.locator("#messages").evaluate("node => node.scrollTo(0, 0)")
    expect(messages).to_have_count(32)
    expect(messages.first.locator(".message-text")).to_have_text(f"Ledger question 1 {tag}")
    assert page.locator("#messages").evaluate("node => node.scrollTop > 0")  # the reader's place is kept
    expect(page.locator("#history-more")).to_be_hidden()


def test_the_conversation_list_scrolls_on_with_pinned_first(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    token = site.tokens["bob"]
    ids = []
    for number in range(1, 26):
        status, conversation = site.api("POST", "/api/conversations", token, {"title": f"Client file {number:02d}"})
        assert status == 201
        ids.append(conversation["id"])
    assert site.api("PATCH", f"/api/conversations/{ids[0]}", token, {"pinned": True})[0] == 200
    sign_in_with_token(page, token)
    items = page.locator("#conversation-list .conversation-item")
    expect(items).to_have_count(20)  # the first page
    expect(items.first).to_have_attribute("data-id", ids[0])  # pinned first, although it is the oldest
    expect(items.first.locator(".pin-marker")).to_be_visible()
    expect(items.nth(1).locator(".conversation-name")).to_have_text("Client file 25")
    total = site.api("GET", "/api/conversations?limit=100", token)[1]["items"]
    page.locator("#sidebar-scroll").evaluate("node => node.scrollTo(0, node.scrollHeight)")
    expect(items).to_have_count(len(total))
    expect(page.locator("#list-more")).to_be_hidden()


def test_a_non_admin_gets_no_operator_page(browsing: Browsing, site: Site) -> None:
    page, watch = browsing
    sign_in_with_token(page, site.tokens["bob"], "/admin")
    expect(page.get_by_role("heading", name="Not authorised")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    page.wait_for_timeout(500)
    assert [url for url, _ in watch.responses if "/api/admin/" in url] == []  # nothing was even asked

    # A page told by the session that bob is an admin still shows nothing: the admin API says 403.
    page.route("**/api/auth/session", lambda route: route.fulfill(json={"csrf_token": None, "user": {
        "id": 2, "email": "bob@example.com", "name": "", "is_admin": True, "created_at": "2025-01-01T00:00:00Z",
        "organisation_id": 2, "role": "owner"}}))
    page.reload()
    expect(page.get_by_role("heading", name="Not authorised")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    admin_answers = [status for url, status in watch.responses if "/api/admin/" in url]
    assert admin_answers and set(admin_answers) == {403}
    assert page.locator("#breaker-rows tr").count() == 0


def test_an_admin_sees_queues_breakers_alerts_and_analytics(browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, watch = browsing
    site.conversation_with_answer("admin", "Operator check", f"Is the queue healthy? {unique('ops')}")
    flask_command({**site.env, "DISABLE_QUEUES": "true"}, "jobs", "reconcile")  # roll up today's analytics
    page.clock.install()  # so that the test can move the page's refresh timer on
    sign_in_with_token(page, site.tokens["admin"], "/admin")
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    breakers = page.locator("#breaker-rows tr")
    for name in ("database", "external-api", "redis", "AI-primary"):
        expect(page.locator(f'#breaker-rows tr[data-breaker="{name}"]')).to_be_visible()
    expect(breakers.first.locator(".state")).to_have_text("closed")
    expect(page.locator('#queue-rows tr[data-queue="titleGeneration"] th')).to_have_text("Titles")
    expect(page.locator("#queue-mode")).to_have_text("thread mode")
    expect(page.locator("#alert-list .alert")).to_have_count(4)
    expect(page.locator("#alerts-count")).not_to_be_empty()
    expect(page.locator("#cache-stats dt").first).to_have_text("Hit rate, overall")
    expect(page.locator("#analytics-chart svg .bar")).to_have_count(14)
    expect(page.locator("#analytics-chart svg .value-label").last).to_be_visible()
    expect(page.get_by_role("link", name="Queue dashboard (rq-dashboard)")).to_have_attribute("href", "/admin/rq/")
    page.screenshot(path=str(screenshots / "admin.png"), full_page=True)

    page.locator('#breaker-rows tr[data-breaker="AI-primary"] button').click()
    expect(page.locator("#notice")).to_contain_text("AI-primary breaker is closed again")
    assert any(url.endswith("/api/admin/breakers/AI-primary/reset") and status == 200
               for url, status in watch.responses)

    def alerts_requests() -> int:
        """How many times the page has asked for the alerts."""
        return sum(1 for url, _ in watch.responses if url.endswith("/api/admin/alerts"))

    before = alerts_requests()
    page.clock.run_for(5_100)  # the page refreshes itself every 5 s
    deadline = time.monotonic() + 5
    while alerts_requests() <= before and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert alerts_requests() > before


def test_the_list_is_a_drawer_at_phone_width(browser: Any, site: Site, screenshots: Path) -> None:
    context, page, watch = open_page(browser, site, viewport={"width": 390, "height": 844}, is_mobile=True,
                                     has_touch=True, device_scale_factor=2)
    try:
        conversation_id = site.conversation_with_answer(  # an admin: the top bar has one more link
            "admin", "Year-end checklist", "Which adjustments belong in a year-end checklist?")
        sign_in_with_token(page, site.tokens["admin"])
        toggle = page.get_by_role("button", name="Conversations")
        expect(toggle).to_be_visible()
        expect(page.locator("#sidebar")).not_to_be_in_viewport()
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(page.locator("#sidebar")).to_be_in_viewport()
        page.locator(f'.conversation-item[data-id="{conversation_id}"] a').click()
        expect(page.locator("#sidebar")).not_to_be_in_viewport()
        expect(page.locator("#message-list .message").first).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at phone width"
        expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport(ratio=1)
        page.screenshot(path=str(screenshots / "phone.png"))
        page.goto("/admin")
        expect(page.locator("#breaker-rows tr").first).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the operator page is {width} px wide at phone width"
        assert watch.errors == [] and watch.dialogs == []
    finally:
        context.close()

