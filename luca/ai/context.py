"""What is sent to a provider: the system prompt and the recent messages within a budget."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from luca.ai.base import ChatMessage, estimate_tokens

SYSTEM_PROMPT = (
    "You are Luca, an expert assistant for accounting, tax and finance. Answer precisely and "
    "practically, name the jurisdiction a rule applies to, show calculations step by step, and "
    "say when a question needs a qualified accountant or tax adviser. If you are unsure, say so."
)


# The documents' system message: an instruction to cite, then numbered passages, each after a label line.
DOCUMENTS_HEADER = (
    "Passages from the documents the user attached to this conversation follow, each after a line "
    "'[n] filename, place'. Answer from them when they hold the answer, and cite each passage you use "
    "by its number in square brackets, like [1], right after the statement it supports. Cite only "
    "these numbers; if the passages do not answer the question, say so."
)
PASSAGE_LABEL = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Passage:
    """A numbered chunk of a document, as sent to the provider and cited back."""

    n: int
    chunk_id: int
    file_id: int
    filename: str
    anchor: dict[str, Any]
    text: str
    parts: list[Any] = field(default_factory=list)

    @property
    def label(self) -> str:
        """'[n] filename, page p' (or sheet and cells, rows, lines, a heading)."""
        return f"[{self.n}] {self.filename}, {place_text(self.anchor)}"


def place_text(anchor: dict[str, Any]) -> str:
    """Where a passage is, in words: 'page 3', 'sheet "TB", cells A12:D30', 'rows 10-40', 'lines 1-9'."""
    if "page" in anchor:
        return f"page {anchor['page']}"
    if "sheet" in anchor:
        return f'sheet "{anchor["sheet"]}"' + (f", cells {anchor['cells']}" if anchor.get("cells") else "")
    if "paragraphs" in anchor:
        heading = f'under "{anchor["heading"]}", ' if anchor.get("heading") else ""
        return f"{heading}paragraphs {anchor['paragraphs']}"
    if "rows" in anchor:
        return f"rows {anchor['rows']}"
    if "lines" in anchor:
        return f"lines {anchor['lines']}"
    return "the document"


def format_passages(passages: Sequence[Passage]) -> str:
    """The documents' system message: the instruction to cite, then each passage under its label."""
    body = "\n\n".join(f"{p.label}\n{p.text}" for p in passages)
    return f"{DOCUMENTS_HEADER}\n\n{body}"


def read_passages(messages: Sequence[ChatMessage]) -> list[tuple[int, str, str]]:
    """The (n, label, text) passages of a context's documents message, if it has one (the offline provider)."""
    content = next((m["content"] for m in messages if m["role"] == "system"
                    and m["content"].startswith(DOCUMENTS_HEADER)), None)
    if content is None:
        return []
    body = content[len(DOCUMENTS_HEADER):]
    labels = []
    for match in PASSAGE_LABEL.finditer(body):  # numbered in order: a line of a passage that looks like one is text
        if int(match.group(1)) == len(labels) + 1:
            labels.append(match)
    found = []
    for index, match in enumerate(labels):
        end = labels[index + 1].start() if index + 1 < len(labels) else len(body)
        found.append((int(match.group(1)), match.group(2), body[match.end():end].strip()))
    return found


def system_prompt() -> str:
    """The configured system prompt, or Luca's default."""
    return current_app.config.get("AI_SYSTEM_PROMPT") or SYSTEM_PROMPT


def build_context(history: Sequence[tuple[str, str]], budget_tokens: int | None = None,
                  documents: str | None = None) -> list[ChatMessage]:
    """System prompt (and attached documents) plus the newest (role, content) pairs within the budget.

    history is ordered oldest first and ends with the question being asked, which
    is always included. documents has a budget of its own (AI_FILE_CONTEXT_TOKENS).
    """
    budget = budget_tokens if budget_tokens is not None else current_app.config["AI_CONTEXT_TOKENS"]
    prompt = system_prompt()
    remaining = budget - estimate_tokens(prompt)
    picked: list[ChatMessage] = []
    for index, (role, content) in enumerate(reversed(history)):
        cost = estimate_tokens(content)
        if index > 0 and cost > remaining:
            break
        picked.append({"role": role, "content": content})
        remaining -= cost
    picked.reverse()
    head: list[ChatMessage] = [{"role": "system", "content": prompt}]
    if documents:
        head.append({"role": "system", "content": documents})
    return [*head, *picked]
