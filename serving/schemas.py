"""The OpenAI chat-completions request, as the gateway accepts it.

Fields OpenAI defines but the gateway cannot honour (several choices, tools,
log-probabilities) are refused with a 400 that names them, rather than silently
ignored; fields OpenAI does not define are refused the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# OpenAI fields that are accepted but have no effect on the answer.
_ACCEPTED_NOOPS = {"metadata", "store", "service_tier", "logit_bias", "parallel_tool_calls"}
# OpenAI fields the gateway does not support: a request using them gets a 400.
_UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "audio": "audio output",
    "modalities": "non-text modalities",
    "prediction": "predicted outputs",
    "top_logprobs": "log-probabilities",
    "web_search_options": "web search",
}


MAX_MESSAGES = 2048  # a conversation longer than this is a mistake or an attack, not a chat


def _lone_surrogate(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first string holding a lone UTF-16 surrogate (valid JSON, but no text): it cannot be
    encoded for the tokenizer or the cloud, and used to surface as a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if depth > 32:
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for k, v in items:
        found = _lone_surrogate(k, path, depth + 1) or _lone_surrogate(v, f"{path}.{k}" if path else str(k), depth + 1)
        if found:
            return found
    return None


class UnsupportedField(ValueError):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"'{field}' is not supported by this gateway ({why})")
        self.field = field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise UnsupportedField("messages[].content", f"content part of type {part.get('type')!r}")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="only plain text: JSON modes are not supported yet")


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error object: every failure, 422 included, has this shape."""

    error: ErrorBody


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int | None = Field(None, ge=1, le=1, description="only 1: several choices are not supported")
    user: str | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logprobs: Literal[False] | None = Field(None, description="log-probabilities are not supported: false or absent")
    response_format: ResponseFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        where = _lone_surrogate(data, "")
        if where is not None:
            raise ValueError(f"{where or 'the body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text")
        return data

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedField` for anything the gateway would otherwise have to ignore."""
        for name in self.model_extra or {}:
            if name in _UNSUPPORTED:
                raise UnsupportedField(name, _UNSUPPORTED[name])
            if name not in _ACCEPTED_NOOPS:
                raise UnsupportedField(name, "not a chat-completions field")
        for m in self.messages:
            m.text()

    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def plain_messages(self) -> list[dict[str, Any]]:
        """Messages as role/content strings: what every backend and chat template understands."""
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
        return out

    @property
    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class FeedbackRequest(BaseModel):
    """``{"id": "chatcmpl-hg-...", "rating": "good"}``; a rating is good/bad or a number from 0 (bad) to 1 (good)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    rating: Literal["good", "bad"] | float

    @field_validator("rating")
    @classmethod
    def _in_range(cls, v: object) -> object:
        if isinstance(v, float) and not 0.0 <= v <= 1.0:
            raise ValueError("a numeric rating is between 0 (bad) and 1 (good)")
        return v

    def score(self) -> float:
        if self.rating == "good":
            return 1.0
        if self.rating == "bad":
            return 0.0
        return float(self.rating)
