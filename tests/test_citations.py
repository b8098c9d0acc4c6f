"""Answers grounded in the user's documents: the provider gets the right passage, the answer cites its place."""
from __future__ import annotations

from typing import Any

from flask import Flask

from tests.support.api import Api, signed, upload
from tests.support.apps import provider_overrides
from tests.support.documents import make_pdf, trial_balance
from tests.support.sse import parse_events

FIGURE = "7391842"


def report_pdf() -> bytes:
    """A 40-page PDF; only page 37 holds the figure."""
    return make_pdf([f"Page {n} of the annual report on operating leases and general matters" if n != 37
                     else f"Unique closing balance of the lease liability {FIGURE} euro" for n in range(1, 41)])


def ready_conversation(api: Api, name: str, data: bytes) -> tuple[dict[str, Any], int]:
    """A conversation with one processed document (jobs run inline)."""
    conversation = api.new_conversation()
    file = upload(api, conversation["id"], name, data)
    assert api.get(f"/api/files/{file['id']}").get_json()["status"] == "ready"
    return conversation, file["id"]


def documents_message(request: dict[str, Any]) -> str:
    """The documents' system message the provider received."""
    return next(m["content"] for m in request["messages"] if m["role"] == "system" and "[1]" in m["content"])


def inline_app(app_factory: Any, *servers: Any) -> Flask:
    """An app whose jobs run before the request returns, answering through the given fake providers."""
    return app_factory(**provider_overrides(*servers, DISABLE_QUEUES=True)) if servers else \
        app_factory(DISABLE_QUEUES=True)


def test_the_provider_receives_page_37_and_the_answer_cites_it(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    conversation, file_id = ready_conversation(api, "report.pdf", report_pdf())
    primary.configure(answer=f"The lease liability closed at {FIGURE} euro [1].")
    answer = api.ask(conversation["id"], f"What was the closing balance {FIGURE} of the lease liability?") \
        .get_json()["answer"]
    sent = documents_message(primary.requests[-1])
    assert "[1] report.pdf, page 37\n" in sent and FIGURE in sent
    assert "cite each passage" in sent
    assert answer["citations"] == [{"n": 1, "file_id": file_id, "filename": "report.pdf", "page": 37,
                                    "sheet": None, "cells": None, "rows": None, "lines": None, "heading": None,
                                    "paragraph": None, "paragraphs": None,
                                    "snippet": f"Unique closing balance of the lease liability {FIGURE} euro"}]


def test_a_marker_that_names_no_passage_is_not_a_citation(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    conversation, _ = ready_conversation(api, "report.pdf", report_pdf())
    primary.configure(answer="See [99] and [1, 120].")
    answer = api.ask(conversation["id"], "closing balance of the lease liability").get_json()["answer"]
    assert [c["n"] for c in answer["citations"]] == [1]


def test_an_xlsx_citation_names_sheet_tb_and_cell_d14(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    conversation, _ = ready_conversation(api, "tb.xlsx", trial_balance())
    primary.configure(answer="The suspense clearing account holds 98765.43 [1].")
    answer = api.ask(conversation["id"], "What is the balance of the suspense clearing account?").get_json()["answer"]
    citation = answer["citations"][0]
    assert (citation["sheet"], citation["cells"]) == ("TB", "D14")
    assert "98765.43" in citation["snippet"]


def test_a_csv_citation_names_its_row(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    rows = "\n".join(["date,payee,amount"] + [f"2026-01-{d:02d},Supplier {d},{d * 100}" for d in range(1, 29)])
    rows = rows.replace("Supplier 17,1700", "Zephyr Holdings,55120")
    conversation, _ = ready_conversation(api, "bank.csv", rows.encode())
    primary.configure(answer="Zephyr Holdings was paid 55120 [1].")
    answer = api.ask(conversation["id"], "How much was paid to Zephyr Holdings?").get_json()["answer"]
    assert answer["citations"][0]["rows"] == "18"  # the header is row 1
    sent = documents_message(primary.requests[-1])
    assert "[1] bank.csv, rows 1-29" in sent


def test_the_offline_provider_quotes_and_cites_the_right_page(app_factory) -> None:
    api = signed(inline_app(app_factory))
    conversation, file_id = ready_conversation(api, "report.pdf", report_pdf())
    answer = api.ask(conversation["id"], "What was the closing balance of the lease liability?").get_json()["answer"]
    assert answer["provider"] == "offline"
    assert FIGURE in answer["content"] and "[1]" in answer["content"]
    assert [(c["n"], c["file_id"], c["page"]) for c in answer["citations"]][0] == (1, file_id, 37)


def test_the_streams_end_event_carries_the_citations(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    conversation, _ = ready_conversation(api, "report.pdf", report_pdf())
    primary.configure(answer=f"It closed at {FIGURE} [1].")
    response = api.ask(conversation["id"], "closing balance of the lease liability", stream=True)
    end = [data for name, data in parse_events(response.get_data(as_text=True)) if name == "end"][0]
    assert [c["page"] for c in end["citations"]] == [37]
    assert end["message"]["citations"] == end["citations"]
    stored = api.get(f"/api/conversations/{conversation['id']}/messages").get_json()["items"][0]
    assert stored["citations"] == end["citations"]


def test_an_answer_without_documents_has_no_citations(app_factory, servers) -> None:
    primary, _ = servers
    api = signed(inline_app(app_factory, primary))
    conversation = api.new_conversation()
    primary.configure(answer="Depreciation [1] spreads cost.")
    assert api.ask(conversation["id"], "What is depreciation?").get_json()["answer"]["citations"] is None
