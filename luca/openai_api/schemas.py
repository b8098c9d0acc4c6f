"""The /v1 request and response models: the part of OpenAI's chat completions and models API that Luca speaks.

Requests are validated strictly and unknown fields are refused, so a client that relies on a
feature Luca does not have (tools, images, n > 1, ...) hears so instead of getting an answer
that silently ignored it. Responses carry the fields OpenAI's published types require.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request part: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    """A text part of a message's content (other part types, images included, are refused)."""

    type: Literal["text"]
    text: str


class MessageIn(Strict):
    """One message of the request; developer is the newer name of system."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted and not used, as OpenAI does for system and user messages

    def text(self) -> str:
        """The content as one text (parts joined by newlines)."""
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class StreamOptions(Strict):
    """stream_options: only include_usage."""

    include_usage: bool | None = None


class ChatCompletionRequest(Strict):
    """POST /v1/chat/completions."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)  # accepted; OpenAI uses it to trace abuse
    n: int | None = Field(default=None, ge=1, le=1)


# Fields of OpenAI's request that Luca knows and does not support: a 400 names them as such.
UNSUPPORTED = {
    "tools": "tools and function calling", "tool_choice": "tools and function calling",
    "parallel_tool_calls": "tools and function calling", "functions": "tools and function calling",
    "function_call": "tools and function calling", "response_format": "structured output (response_format)",
    "logprobs": "log probabilities", "top_logprobs": "log probabilities", "audio": "audio output",
    "modalities": "output modalities", "prediction": "predicted outputs", "web_search_options": "web search",
    "logit_bias": "logit_bias", "stop": "stop sequences", "seed": "seeds", "top_p": "top_p",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "reasoning_effort": "reasoning_effort", "service_tier": "service tiers", "store": "stored completions",
    "metadata": "stored completions (metadata)",
}


class Usage(BaseModel):
    """Tokens of one answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The answer of a chat.completion."""

    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    """The one choice of a chat.completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A whole answer; model names the provider and model that wrote it (<provider>/<model>)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    """What one chunk adds to the answer."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk."""

    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed answer (serialised without its null fields)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class Model(BaseModel):
    """A model a client may ask for."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[Model]


class ErrorObject(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every /v1 error: {"error": {"message", "type", "code", "param"}}."""

    error: ErrorObject
