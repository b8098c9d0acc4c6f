"""The built-in offline provider: deterministic answers, no network, clearly labelled."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

from luca.ai.base import ChatMessage, Completion, Options, StreamEnd, estimate_tokens
from luca.ai.context import read_passages

DOCUMENT_NOTICE = ("(Offline answer: no AI provider is configured, so Luca quotes the passages of your documents "
                   "that best match the question.)")
MAX_QUOTES = 3
QUOTE_CHARS = 280
NOTICE = "(Offline answer: no AI provider is configured, so Luca answers from a small built-in guide.)"

# Keyword sets and the short, general guidance the offline provider gives for them.
GUIDE: list[tuple[frozenset[str], str]] = [
    (frozenset({"corporate", "corporation", "company"}),
     "Corporate income tax is charged on a company's taxable profit. Rates differ by country: "
     "the US federal rate is 21%, the UK main rate is 25% (19% for small profits), and many EU "
     "countries sit between 15% and 30%. Check local and state surcharges as well."),
    (frozenset({"vat", "gst", "sales"}),
     "VAT (or GST) is charged on sales and reclaimed on purchases; a business pays over the "
     "difference each period. Keep valid invoices for input tax and watch registration thresholds."),
    (frozenset({"depreciation", "depreciate", "amortisation", "amortization"}),
     "Depreciation spreads an asset's cost over its useful life. Straight-line: (cost - residual "
     "value) / useful life each year; declining balance applies a fixed rate to the remaining book value."),
    (frozenset({"accrual", "accruals", "accrued", "prepayment", "prepayments"}),
     "Under accrual accounting, income and expenses are recorded when earned or incurred, not when "
     "cash moves. Accruals record costs incurred but not yet invoiced; prepayments defer costs paid in advance."),
    (frozenset({"balance", "sheet", "assets", "liabilities", "equity"}),
     "A balance sheet shows assets = liabilities + equity at a date. Current items fall due within "
     "twelve months; non-current items after that."),
    (frozenset({"cash", "flow", "cashflow"}),
     "A cash flow statement splits cash movements into operating, investing and financing "
     "activities; the indirect method starts from profit and adjusts for non-cash items."),
    (frozenset({"deduct", "deductible", "deduction", "expenses", "expense"}),
     "Expenses are generally deductible when incurred wholly and exclusively for the business. "
     "Entertainment, fines and private use are common exceptions; keep receipts."),
    (frozenset({"invoice", "invoices", "invoicing"}),
     "A valid invoice shows the supplier and customer, a unique number, the date, a description, "
     "the net amount, the tax rate and amount, and the total."),
    (frozenset({"payroll", "salary", "wages", "pension"}),
     "Payroll withholds income tax and social contributions from wages and pays employer "
     "contributions on top; report each pay run to the tax authority on time."),
    (frozenset({"dividend", "dividends"}),
     "Dividends are paid from distributable profits after corporate tax; shareholders may owe "
     "dividend tax, often at rates different from salary."),
]

DEFAULT = ("I can help with accounting, tax and finance questions: corporate tax, VAT, "
           "depreciation, accruals, cash flow, payroll and more. Could you tell me a bit more "
           "about your situation (country, type of business, period)?")


class OfflineProvider:
    """Answers from a small built-in guide; always available, deterministic."""

    name = "offline"
    model = "luca-offline-1"

    def answer_text(self, messages: list[ChatMessage]) -> str:
        """Quote the attached documents' best passages with their numbers, else pick the guidance matching the question."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        passages = read_passages(messages)
        if passages:
            return quote_passages(question, passages)
        found = set(re.findall(r"[a-z]+", question.lower()))
        best = max(GUIDE, key=lambda entry: len(entry[0] & found))
        body = best[1] if best[0] & found else DEFAULT
        return f"{body}\n\n{NOTICE}"

    def complete(self, messages: list[ChatMessage], options: Options | None = None) -> Completion:
        """Answer in one piece (the guide's text does not depend on options)."""
        started = time.perf_counter()
        text = self.answer_text(messages)
        return Completion(
            text=text,
            provider=self.name,
            model=self.model,
            tokens_in=sum(estimate_tokens(m["content"]) for m in messages),
            tokens_out=estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )

    def stream(self, messages: list[ChatMessage], options: Options | None = None) -> Iterator[str | StreamEnd]:
        """Answer word by word, as a streaming provider would."""
        text = self.answer_text(messages)
        for piece in re.findall(r"\S+\s*", text):
            yield piece
        yield StreamEnd(tokens_in=sum(estimate_tokens(m["content"]) for m in messages),
                        tokens_out=estimate_tokens(text))


def quote_passages(question: str, passages: list[tuple[int, str, str]]) -> str:
    """The lines of the passages that share most words with the question, each quoted with its [n] and place.

    The passages come ranked by retrieval; a passage sharing no word with the question is quoted only
    when none does (retrieval then sent the documents' first passages).
    """
    wanted = {w for w in re.findall(r"\w+", question.lower()) if len(w) > 2}
    scored = []
    for n, label, text in passages:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        best = max(lines or [text], key=lambda line: len(wanted & set(re.findall(r"\w+", line.lower()))))
        score = len(wanted & set(re.findall(r"\w+", best.lower())))
        scored.append((score, -n, n, label, best))
    scored.sort(reverse=True)
    chosen = [item for item in scored if item[0] > 0][:MAX_QUOTES] or scored[:1]
    quotes = []
    for _, _, n, label, line in chosen:
        line = line if len(line) <= QUOTE_CHARS else line[: QUOTE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        place = label.split(" ", 1)[1] if " " in label else label
        quotes.append(f"> {line} [{n}]\n({place})")
    return "From your documents:\n\n" + "\n\n".join(quotes) + f"\n\n{DOCUMENT_NOTICE}"
