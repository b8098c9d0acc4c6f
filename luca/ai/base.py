"""The provider interface every AI backend implements, and what it returns."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypedDict


class ChatMessage(TypedDict):
    """One message of the context sent to a provider, in the OpenAI chat shape."""

    role: str
    content: str


class Options(TypedDict, total=False):
    """What a client may ask of one call besides the messages (the OpenAI-compatible door passes them)."""

    max_tokens: int
    temperature: float


@dataclass
class Completion:
    """A finished answer and who wrote it."""

    text: str
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    latency_ms: int = 0


@dataclass
class StreamEnd:
    """The last item of a stream: the usage counts the provider reported."""

    tokens_in: int
    tokens_out: int


class Provider(Protocol):
    """An AI backend: answers a chat context, whole or streamed."""

    name: str
    model: str

    def complete(self, messages: list[ChatMessage], options: Options | None = None) -> Completion:
        """Answer the context in one piece."""
        ...

    def stream(self, messages: list[ChatMessage], options: Options | None = None) -> Iterator[str | StreamEnd]:
        """Answer the context as text deltas, then one StreamEnd."""
        ...


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (about four characters a token)."""
    return max(1, (len(text) + 3) // 4)
