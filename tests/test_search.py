"""Full-text search over titles and messages, ranked, highlighted and scoped to one user."""
from __future__ import annotations

from tests.support.api import Api


def hits(api: Api, query: str) -> list[dict]:
    """The search results for query."""
    response = api.get("/api/search", query_string={"q": query})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_search_finds_a_conversation_by_a_word_in_its_title(api: Api) -> None:
    conversation = api.new_conversation(title="Quarterly depreciation schedule")
    api.new_conversation(title="Unrelated")
    found = hits(api, "depreciation")
    assert [(h["conversation_id"], h["message_id"]) for h in found] == [(conversation["id"], None)]
    assert found[0]["conversation_title"] == "Quarterly depreciation schedule"
    assert "<mark>depreciation</mark>" in found[0]["snippet"]


def test_search_finds_a_conversation_by_a_word_in_a_message(api: Api) -> None:
    conversation = api.new_conversation(title="Misc")
    question = api.ask(conversation["id"], "Can I reclaim the withholding on my invoices?").get_json()["message"]
    found = [h for h in hits(api, "withholding") if h["role"] == "user"]
    assert [(h["conversation_id"], h["message_id"]) for h in found] == [(conversation["id"], question["id"])]
    assert "<mark>withholding</mark>" in found[0]["snippet"]


def test_search_matches_word_forms(api: Api) -> None:
    conversation = api.new_conversation(title="Invoicing")
    api.ask(conversation["id"], "We are depreciating three vans")
    assert any(h["conversation_id"] == conversation["id"] for h in hits(api, "depreciate"))


def test_search_needs_every_word(api: Api) -> None:
    a = api.new_conversation(title="pension contributions")
    api.new_conversation(title="pension only")
    assert [h["conversation_id"] for h in hits(api, "pension contributions")] == [a["id"]]


def test_search_never_returns_another_users_data(api: Api, other_api: Api) -> None:
    theirs = other_api.new_conversation(title="Secret merger valuation")
    other_api.ask(theirs["id"], "merger goodwill treatment")
    mine = api.new_conversation(title="My merger notes")
    found = hits(api, "merger")
    assert {h["conversation_id"] for h in found} == {mine["id"]}
    assert all("Secret" not in (h["conversation_title"] or "") for h in found)
    assert hits(api, "goodwill") == []


def test_search_ranks_better_matches_first(api: Api) -> None:
    weak = api.new_conversation(title="Notes")
    api.ask(weak["id"], "A long question that mentions accruals once among many other unrelated words here")
    strong = api.new_conversation(title="Accruals")
    found = hits(api, "accruals")
    assert found[0]["conversation_id"] == strong["id"]
    assert [h["rank"] for h in found] == sorted((h["rank"] for h in found), reverse=True)


def test_snippets_escape_html_in_content(api: Api) -> None:
    conversation = api.new_conversation(title="x")
    api.ask(conversation["id"], "<img src=x onerror=alert(1)> dividend question")
    found = [h for h in hits(api, "dividend") if h["role"] == "user"]
    snippet = found[0]["snippet"]
    assert "<" not in snippet.replace("<mark>", "").replace("</mark>", "")
    assert "onerror=alert(1)&gt;" in snippet


def test_search_of_only_operators_finds_nothing(api: Api) -> None:
    api.new_conversation(title="tax")
    assert hits(api, '"&|!()*') == []


def test_deleted_conversations_leave_the_index(api: Api) -> None:
    conversation = api.new_conversation(title="Ephemeral ledger")
    api.ask(conversation["id"], "ephemeral question")
    api.delete(f"/api/conversations/{conversation['id']}")
    assert hits(api, "ephemeral") == []


def test_renamed_titles_are_searchable_by_the_new_words(api: Api) -> None:
    conversation = api.new_conversation(title="Draft")
    api.patch(f"/api/conversations/{conversation['id']}", json={"title": "Inventory valuation"})
    assert [h["conversation_id"] for h in hits(api, "inventory")] == [conversation["id"]]
    assert hits(api, "draft") == []
