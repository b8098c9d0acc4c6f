"""What is sent to a provider: the system prompt and the recent messages within a budget."""
from __future__ import annotations

from collections.abc import Sequence

from flask import current_app

from luca.ai.base import ChatMessage, estimate_tokens

SYSTEM_PROMPT = (
    "You are Luca, an expert assistant for accounting, tax and finance. Answer precisely and "
    "practically, name the jurisdiction a rule applies to, show calculations step by step, and "
    "say when a question needs a qualified accountant or tax adviser. If you are unsure, say so."
)


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
