"""What AI tokens cost: the price table and the one function every cost in Luca comes from.

Prices are USD per 1,000 tokens, (input, output). The AI_PRICES setting
({"model" or "provider/model": [input, output]}) overrides and extends the defaults. A model is
looked up as provider/model, then as the model, then as the longest priced name it starts with
(providers answer with dated names such as gpt-4o-mini-2024-07-18). The offline provider and
unknown models cost nothing. Costs are exact decimals, kept to ten places.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from flask import current_app

PRICES: dict[str, tuple[str, str]] = {
    "gpt-4o-mini": ("0.00015", "0.0006"),
    "gpt-4o": ("0.0025", "0.01"),
    "gpt-4.1-mini": ("0.0004", "0.0016"),
    "gemini-2.0-flash": ("0.0001", "0.0004"),
    "gemini-1.5-pro": ("0.00125", "0.005"),
    "claude-3-5-haiku-latest": ("0.0008", "0.004"),
    "claude-3-5-sonnet-latest": ("0.003", "0.015"),
}
FREE = (Decimal(0), Decimal(0))
# Ten decimal places: the money columns are NUMERIC(18, 10).
PLACES = Decimal("1e-10")
ZERO = Decimal("0").quantize(PLACES)

Prices = dict[str, tuple[Decimal, Decimal]]


def money(value: Decimal | int | str) -> Decimal:
    """An amount of USD at the stored precision."""
    return Decimal(value).quantize(PLACES, rounding=ROUND_HALF_UP)


def price_table() -> Prices:
    """The default prices with the AI_PRICES setting laid over them."""
    configured = current_app.config.get("AI_PRICES") or {}
    table = {name: (Decimal(a), Decimal(b)) for name, (a, b) in PRICES.items()}
    table.update({name: (Decimal(str(pair[0])), Decimal(str(pair[1]))) for name, pair in configured.items()})
    return table


def price_of(provider: str | None, model: str | None, prices: Prices | None = None) -> tuple[Decimal, Decimal]:
    """USD per 1,000 tokens (input, output) of a provider's model."""
    if provider == "offline" or not model:
        return FREE
    table = price_table() if prices is None else prices
    found = table.get(f"{provider}/{model}") or table.get(model)
    if found is None:
        prefixes = [name for name in table if "/" not in name and model.startswith(name)]
        found = table[max(prefixes, key=len)] if prefixes else FREE
    return found


def cost_usd(provider: str | None, model: str | None, tokens_in: int | None, tokens_out: int | None,
             prices: Prices | None = None) -> Decimal:
    """The exact cost of tokens_in and tokens_out with a provider's model."""
    price_in, price_out = price_of(provider, model, prices)
    return money(((tokens_in or 0) * price_in + (tokens_out or 0) * price_out) / 1000)


def charged(provider: str | None, model: str | None, tokens_in: int | None, tokens_out: int | None,
            cached: bool) -> tuple[Decimal, Decimal | None]:
    """An answer's (cost_usd, saved_usd): its cost, or 0 and what it saved when deduplication served it."""
    cost = cost_usd(provider, model, tokens_in, tokens_out)
    return (ZERO, cost) if cached else (cost, None)
