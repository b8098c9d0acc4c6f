"""Citations, document hits and spend in the pages, end to end: headless Chromium against Luca under gunicorn.

The browser tooling is tests/test_e2e.py's (its browser, page and sign-in helpers); the site is this
module's own, because its answers must cost money: the primary test provider's model is priced in
AI_PRICES. The provider echoes the question, so a question that carries "[1]" gets an answer that
cites passage [1] of the conversation's documents (or a test sets a fixed answer). Screenshots of a
citation, of the operator page's spend and of the Usage view are written to docs/screenshots/
(citations.png, spend.png, usage.png).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.apps import provider_env
from tests.support.documents import make_pdf, trial_balance
from tests.support.pages import require_chromium
from tests.support.processes import flask_command, gunicorn, luca_env
from tests.support.browser import Browsing, Site, ask, last_answer, new_conversation, unique
from tests.support.browser import sign_in_with_token as sign_in


pytestmark = pytest.mark.slow  # gunicorn and Chromium take seconds to start
PRICES = {"primary-model": [0.5, 1.5]}  # USD per 1,000 tokens in and out: every answer costs something


@pytest.fixture(scope="module")
def site(provider_servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Luca in a real gunicorn on a migrated SQLite file, answering with the priced primary test provider."""
    require_chromium()
    primary, _ = provider_servers
    tmp = tmp_path_factory.mktemp("e2e-insight")
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp}/luca.db", **provider_env(primary), WEB_CONCURRENCY="1",
                   JOBS_RETRY_BACKOFF="0.5", AI_TIMEOUT="10", AI_PRICES=json.dumps(PRICES))
    flask_command(env, "db", "upgrade")
    users = {"carol": ["carol@example.com"], "dave": ["dave@example.com"], "admin": ["ops@example.com", "--admin"]}
    with ThreadPoolExecutor(len(users)) as pool:
        created = {name: pool.submit(flask_command, env, "users", "create", *args) for name, args in users.items()}
        with gunicorn(env) as (base, _process):
            tokens = {name: future.result().strip().splitlines()[-1] for name, future in created.items()}
            yield Site(base, env, tokens)


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def upload(page: Any, filename: str, pages: list[str] | bytes, mime_type: str = "application/pdf") -> None:
    """Attach a document (a PDF of these pages, or these bytes) to the open conversation; wait until it is ready."""
    data = make_pdf(pages) if isinstance(pages, list) else pages
    page.locator("#file-input").set_input_files(files=[{"name": filename, "mimeType": mime_type, "buffer": data}])
    expect(page.locator("#file-list .file.status-ready")).to_contain_text(filename)


def bank_statement() -> bytes:
    """A CSV of payments whose row 18 (the header is row 1) pays Zephyr Holdings 55120."""
    rows = [f"2026-01-{d:02d},Supplier {d},{d * 100}" for d in range(1, 29)]
    rows[16] = "2026-01-17,Zephyr Holdings,55120"
    return "\n".join(["date,payee,amount", *rows]).encode()


def money_of(page: Any, selector: str) -> str:
    """The exact amount an element of the page shows (its data-usd), after checking it reads as dollars."""
    node = page.locator(selector)
    expect(node).to_have_text(re.compile(r"^\$\d[\d,]*\.\d{2,}$"))
    return node.get_attribute("data-usd") or ""


def same_amount(shown: str, api: str) -> bool:
    """Whether two decimal strings are the same amount."""
    return Decimal(shown) == Decimal(api)


def test_an_answer_citing_a_document_shows_a_chip_that_opens_the_passage_and_its_page(
        browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, _ = browsing
    figure = unique("rent")
    sign_in(page, site.tokens["carol"])
    new_conversation(page)
    upload(page, "lease.pdf", ["Lease schedule, front page", "Terms of the lease, notices",
                               f"Annual {figure} payable 48200 EUR from January"])
    question = f"What is the annual {figure} on the lease? [1]"
    ask(page, question)
    answer = last_answer(page)
    expect(answer.locator(".message-text")).to_have_text(f"[primary] You asked: {question}")
    chip = answer.locator(".citation-chip")
    expect(chip).to_have_count(1)
    expect(chip).to_have_text("[1] lease.pdf, p. 3")

    chip.click()
    passage = answer.get_by_role("region", name="[1] lease.pdf")
    expect(passage).to_be_visible()
    expect(chip).to_have_attribute("aria-expanded", "true")
    expect(passage.locator(".citation-place")).to_have_text("Page 3")
    expect(passage.locator(".citation-snippet")).to_have_text(f"Annual {figure} payable 48200 EUR from January")
    page.screenshot(path=str(screenshots / "citations.png"))
    chip.click()  # a second click puts it away
    expect(passage).to_have_count(0)
    expect(chip).to_have_attribute("aria-expanded", "false")

    page.reload()  # the stored answer keeps its citations
    expect(last_answer(page).locator(".citation-chip")).to_have_text("[1] lease.pdf, p. 3")


def test_an_answer_says_what_it_cost_and_a_deduplicated_one_what_it_saved(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    question = f"When is a provision recognised? {unique('provision')}"
    first = site.conversation_with_answer("dave", "Provisions", question)
    second = site.conversation_with_answer("dave", "Provisions again", question)  # served by deduplication
    status, messages = site.api("GET", f"/api/conversations/{first}/messages", site.tokens["dave"])
    cost = next(m["cost_usd"] for m in messages["items"] if m["role"] == "assistant")
    assert status == 200 and Decimal(cost) > 0

    sign_in(page, site.tokens["dave"])
    page.locator(f'.conversation-item[data-id="{first}"] a').click()
    assert same_amount(money_of(page, "#message-list .from-luca .meta-cost .money"), cost)
    page.locator(f'.conversation-item[data-id="{second}"] a').click()
    meta = page.locator("#message-list .from-luca .message-meta")
    expect(meta.locator(".meta-cached")).to_have_text("served from cache")
    expect(meta.locator(".meta-saved")).to_have_text(re.compile(r"^saved \$"))
    assert same_amount(money_of(page, "#message-list .from-luca .meta-saved .money"), cost)
    expect(meta.locator(".meta-cost")).to_have_count(0)


@pytest.mark.parametrize("filename,data,mime_type,answer,chip,place", [
    ("tb.xlsx", trial_balance(), XLSX, "The suspense clearing account holds 98765.43 [1].", "[1] tb.xlsx, TB!D14",
     "Sheet “TB”, cell D14"),
    ("bank.csv", bank_statement(), "text/csv", "Zephyr Holdings was paid 55120 [1].", "[1] bank.csv, rows 18",
     "Rows 18"),
])
def test_a_spreadsheet_citation_names_its_sheet_and_cell_a_csv_one_its_rows(
        browsing: Browsing, site: Site, servers: Any, filename: str, data: bytes, mime_type: str, answer: str,
        chip: str, place: str) -> None:
    page, _ = browsing
    primary, _ = servers
    primary.configure(answer=answer)
    sign_in(page, site.tokens["dave"])
    new_conversation(page)
    upload(page, filename, data, mime_type)
    ask(page, f"Which figure does the {filename} hold? {unique('figure')}")
    cited = last_answer(page).locator(".citation-chip")
    expect(cited).to_have_text(chip)
    cited.click()
    expect(last_answer(page).locator(".citation-panel .citation-place")).to_have_text(place)


def test_a_word_only_inside_a_document_is_a_document_hit_that_opens_its_conversation(
        browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    word = unique("accrual")
    sign_in(page, site.tokens["carol"])
    conversation_id = new_conversation(page)
    upload(page, "ledger.pdf", ["General ledger, January", f"Closing entries: {word} of 1250 for utilities"])
    new_conversation(page)  # move away, so opening the hit is visible

    page.get_by_label("Search conversations").fill(word)
    page.get_by_label("Search conversations").press("Enter")
    expect(page.locator("#search-status")).to_contain_text("1 result")
    hit = page.locator("#search-list .search-hit")
    expect(hit).to_have_attribute("data-kind", "document")
    expect(hit.locator(".hit-role")).to_have_text("Document")
    expect(hit.locator(".hit-file")).to_have_text("ledger.pdf, p. 2")
    expect(hit.locator(".hit-snippet mark")).to_have_text(re.compile(word, re.IGNORECASE))

    hit.locator("a").click()
    page.wait_for_function(f"() => location.hash === '#/c/{conversation_id}'")
    expect(page.locator("#file-list .file")).to_contain_text("ledger.pdf")


def test_a_document_snippet_shows_markup_as_text(browsing: Browsing, site: Site) -> None:
    page, watch = browsing
    word = unique("markup")
    sign_in(page, site.tokens["dave"])
    new_conversation(page)
    upload(page, "notes.pdf", [f"<img src=x onerror=alert(1)> {word}"])
    page.get_by_label("Search conversations").fill(word)
    page.get_by_label("Search conversations").press("Enter")
    snippet = page.locator("#search-list .document-hit .hit-snippet")
    expect(snippet).to_contain_text("<img src=x")
    expect(snippet.locator("mark")).to_have_count(1)
    assert page.locator("#search-list img").count() == 0
    assert watch.dialogs == []


def test_the_operator_page_shows_this_months_spend_and_what_deduplication_saved(
        browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, _ = browsing
    question = f"Which costs are deductible for a home office? {unique('office')}"
    site.conversation_with_answer("admin", None, question)
    site.conversation_with_answer("admin", None, question)  # the same first question: deduplicated, saved
    status, usage = site.api("GET", "/api/usage?group_by=model", site.tokens["admin"])
    assert status == 200 and float(usage["totals"]["cost_usd"]) > 0 and float(usage["totals"]["saved_usd"]) > 0

    sign_in(page, site.tokens["admin"], "/admin")
    expect(page.get_by_role("heading", name=re.compile("^Spend this month"))).to_be_visible()
    spent = money_of(page, '#spend-totals [data-figure="spent"] .money')
    saved = money_of(page, '#spend-totals [data-figure="saved"] .money')
    status, now = site.api("GET", "/api/usage", site.tokens["admin"])
    assert same_amount(spent, now["totals"]["cost_usd"]) and same_amount(saved, now["totals"]["saved_usd"])
    model = page.locator('#spend-models tbody tr[data-group="primary-model"]')
    expect(model.locator("th")).to_have_text("primary-model")
    expect(model.locator(".money").first).to_have_text(re.compile(r"^\$"))
    expect(page.locator("#spend-users tbody th", has_text="ops@example.com")).to_be_visible()
    page.locator("section[aria-labelledby=spend-heading]").screenshot(path=str(screenshots / "spend.png"))


def test_a_member_sees_their_own_months_usage(browsing: Browsing, site: Site, screenshots: Path) -> None:
    page, _ = browsing
    site.conversation_with_answer("dave", None, f"How do I book a prepayment? {unique('prepaid')}")
    status, mine = site.api("GET", "/api/me/usage", site.tokens["dave"])
    assert status == 200 and mine["totals"]["answers"] >= 1
    across, _ = site.api("GET", "/api/usage", site.tokens["dave"])

    sign_in(page, site.tokens["dave"])
    page.get_by_role("button", name="Usage").click()
    dialog = page.get_by_role("dialog", name="Usage this month")
    expect(dialog).to_be_visible()
    spent = money_of(page, '#usage-mine-totals [data-figure="spent"] .money')
    assert same_amount(spent, mine["totals"]["cost_usd"])
    expect(dialog.locator('#usage-mine-totals [data-figure="answers"]')).to_have_text(str(mine["totals"]["answers"]))
    expect(dialog.locator('#usage-mine-models tbody tr[data-group="primary-model"] th')).to_have_text("primary-model")
    # The organisation's part is there exactly when GET /api/usage answers this member (an org admin's).
    if across == 200:
        expect(dialog.locator("#usage-org")).to_be_visible()
    else:
        expect(dialog.locator("#usage-org")).to_be_hidden()
    expect(dialog.locator("#usage-status")).to_be_empty()
    page.screenshot(path=str(screenshots / "usage.png"))


def test_an_operator_sees_everyones_spend_by_member_in_the_usage_view(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    site.conversation_with_answer("carol", None, f"What is a suspense account? {unique('suspense')}")
    sign_in(page, site.tokens["admin"])
    page.get_by_role("button", name="Usage").click()
    part = page.locator("#usage-org")
    expect(part).to_be_visible()
    expect(part.locator("#usage-org-heading")).to_have_text("Everyone (all organisations)")
    expect(part.locator("#usage-org-members tbody th", has_text="carol@example.com")).to_be_visible()
    status, everyone = site.api("GET", "/api/usage", site.tokens["admin"])
    assert status == 200
    assert same_amount(money_of(page, '#usage-org-totals [data-figure="spent"] .money'), everyone["totals"]["cost_usd"])


def test_an_org_admin_sees_the_organisations_spend_against_its_budget(browsing: Browsing, site: Site) -> None:
    """Erin owns an organisation with Frank in it; she spends, sets budgets through the API, and the Usage
    view shows what GET /api/usage, /api/org and /api/org/members answer her."""
    page, _ = browsing
    org = f"Bookkeepers & Co {unique('org')}"
    erin_token = site.command("users", "create", f"{unique('erin')}@example.com", "--org", org).strip().splitlines()[-1]
    site.command("users", "create", f"{unique('frank')}@example.com", "--org", org)
    site.tokens["erin"] = erin_token
    conversation = site.conversation_with_answer("erin", None, f"What is a holding company? {unique('holding')}")
    deadline = time.monotonic() + 30  # its title costs money too: the spend is read once the title job ran
    while not site.api("GET", f"/api/conversations/{conversation}", erin_token)[1]["title"]:
        assert time.monotonic() < deadline, "the title job never ran"
        time.sleep(0.2)
    erin = site.api("GET", "/api/me", erin_token)[1]
    spent = Decimal(site.api("GET", "/api/org", erin_token)[1]["month_spent_usd"])
    assert spent > 0
    budget = (spent / Decimal("0.86")).quantize(Decimal("0.01"), rounding=ROUND_UP)  # about 86 % spent
    assert site.api("PATCH", "/api/org", erin_token, {"monthly_budget_usd": str(budget)})[0] == 200
    assert site.api("PATCH", f"/api/org/members/{erin['id']}", erin_token, {"monthly_budget_usd": "20"})[0] == 200
    members = site.api("GET", "/api/org/members", erin_token)[1]["items"]
    frank = next(m for m in members if m["email"].startswith("frank"))
    by_model = site.api("GET", "/api/usage?group_by=model", erin_token)[1]

    sign_in(page, erin_token)
    page.get_by_role("button", name="Usage").click()
    part = page.locator("#usage-org")
    expect(part.locator("#usage-org-heading")).to_have_text(org)
    line = part.locator("#usage-org-budget .budget-line")
    expect(line).to_have_class(re.compile(r"\bnear\b"))
    expect(line.locator("p")).to_have_text(re.compile(r"^\$[\d.]+ of \$[\d.]+ this month · 8\d\.\d %$"))
    assert [Decimal(v) for v in line.locator(".money").evaluate_all("ns => ns.map(n => n.dataset.usd)")] == \
        [spent, budget]
    mine = part.locator(f'#usage-org-members tbody tr[data-group="{erin["id"]}"]')
    expect(mine.locator("th")).to_have_text(erin["email"])
    expect(mine.locator(".money").last).to_have_text("$20.00")  # her monthly budget
    expect(part.locator("#usage-org-members .budget-head")).to_be_visible()
    idle = part.locator(f'#usage-org-members tbody tr[data-group="{frank["id"]}"]')  # a member who spent nothing
    expect(idle.locator("th")).to_have_text(frank["email"])
    expect(idle.locator("td").last).to_have_text("—")  # no budget of his own
    model = by_model["items"][0]
    shown = part.locator(f'#usage-org-models tbody tr[data-group="{model["group"]}"] .money').first
    assert same_amount(shown.get_attribute("data-usd") or "", model["cost_usd"])
    expect(page.locator("#usage-mine-budget .budget-line p")).to_contain_text("of $20.00 this month")


def test_sign_out_closes_the_usage_view_and_forgets_its_figures(browsing: Browsing, site: Site) -> None:
    page, _ = browsing
    sign_in(page, site.tokens["admin"])
    page.get_by_role("button", name="Usage").click()
    expect(page.locator("#usage-org-members tbody tr").first).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#usage-dialog")).to_be_hidden()
    assert page.locator("#usage-org-members tbody tr, #usage-mine-totals dt").count() == 0
