"""The OpenAI chat-completions request, as the gateway accepts it.

Structured output (``response_format``), tools, several choices and
log-probabilities are answered on both routes. Fields OpenAI defines but the
gateway cannot honour (legacy functions, audio, other modalities) are refused
with a 400 that names them, rather than silently ignored; so are fields OpenAI
does not define, and combinations a route cannot serve (several choices or
log-probabilities in a stream).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

# OpenAI fields that are accepted but have no effect on the answer.
_ACCEPTED_NOOPS = {"metadata", "store", "service_tier", "logit_bias"}
# OpenAI fields the gateway does not support: a request using them gets a 400.
_UNSUPPORTED = {
    "functions": "the legacy function-calling fields: use tools",
    "function_call": "the legacy function-calling fields: use tool_choice",
    "audio": "audio output",
    "modalities": "non-text modalities",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
}


MAX_MESSAGES = 2048  # a conversation longer than this is a mistake or an attack, not a chat
MAX_CHOICES = 8  # n: each local choice is a whole generation on the device
MAX_TOOLS = 128  # OpenAI's own limit
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding a lone UTF-16 surrogate (valid JSON, but no text): it cannot
    be encoded for the tokenizer or the cloud. Every level is read, iteratively: a surrogate nested deeper than a
    fixed limit used to pass, fail inside the cloud client and count against the shared circuit breaker."""
    todo: list[tuple[Any, str]] = [(value, path)]
    while todo:
        item, where = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for k, v in item.items():
                todo.append((k, where))
                todo.append((v, f"{where}.{k}" if where else str(k)))
        elif isinstance(item, list):
            todo.extend((v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(item))
    return None


def _refuse_lone_surrogates(data: Any) -> Any:
    where = _lone_surrogate(data, "")
    if where is not None:
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")  # the message itself must be sendable
        raise ValueError(f"{where or 'the body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text")
    return data


class UnsupportedField(ValueError):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"'{field}' is not supported by this gateway ({why})")
        self.field = field


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    arguments: str = Field(max_length=1_000_000, description="the arguments as a JSON text, as the model wrote them")


class ToolCall(BaseModel):
    """A call an assistant turn made earlier in the conversation."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


# A content part as the schema states it: only text parts are answered (others are a 400 that names them).
_TEXT_PART = {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}}, "required": ["type", "text"]}


class ChatMessage(BaseModel):
    # The schema states what the validator below enforces, so a generated client (or a fuzzer) knows it.
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"role": {"const": "tool"}}, "required": ["role"]},
                    "then": {"properties": {"tool_call_id": {"type": "string", "minLength": 1}}, "required": ["tool_call_id"]},
                },
                {
                    "if": {"properties": {"tool_calls": {"type": "array", "minItems": 1}}, "required": ["tool_calls"]},
                    "then": {"properties": {"role": {"const": "assistant"}}},
                },
            ]
        },
    )

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[dict[str, Any], WithJsonSchema(_TEXT_PART)]] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message of role tool needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        return self

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


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``text``, ``json_object`` (any JSON object) or ``json_schema`` (an object that matches the schema)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # what the validator below enforces, stated in the schema
            "if": {"properties": {"type": {"const": "json_schema"}}, "required": ["type"]},
            "then": {"properties": {"json_schema": {"type": "object"}}, "required": ["json_schema"]},
            "else": {"properties": {"json_schema": {"type": "null"}}},
        },
    )

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with, and only with, type json_schema")
        return self

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error object: every failure, 422 included, has this shape."""

    error: ErrorBody


class ChatCompletionRequest(BaseModel):
    # Extra fields are collected (so the 400 can name them), but the schema says what the gateway does with
    # them: none is accepted beyond the fields below.
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES, description=f"several choices, at most {MAX_CHOICES}; not with stream")
    user: str | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logprobs: bool | None = Field(None, description="log-probabilities of the answer's tokens; not with stream")
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI fields accepted without effect on the answer (never sent to a provider).
    metadata: dict[str, Any] | None = Field(None, description="accepted, not used")
    store: bool | None = Field(None, description="accepted, not used")
    service_tier: str | None = Field(None, description="accepted, not used")
    logit_bias: dict[str, Any] | None = Field(None, description="accepted, not used")

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        return _refuse_lone_surrogates(data)

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedField` for anything the gateway would otherwise have to ignore."""
        for name in self.model_extra or {}:
            if name in _UNSUPPORTED:
                raise UnsupportedField(name, _UNSUPPORTED[name])
            if name not in _ACCEPTED_NOOPS:
                raise UnsupportedField(name, "not a chat-completions field")
        for m in self.messages:
            m.text()
        if (self.n or 1) > 1 and self.stream:
            raise UnsupportedField("n", "several choices are answered whole, not streamed: n > 1 needs stream false")
        if self.logprobs and self.stream:
            raise UnsupportedField("logprobs", "log-probabilities come with whole answers, not streams")
        if self.top_logprobs and not self.logprobs:
            raise UnsupportedField("top_logprobs", "top_logprobs needs logprobs: true")
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise UnsupportedField("tools", "two tools share a name")
        if self.tool_choice is not None and not self.tools:
            raise UnsupportedField("tool_choice", "tool_choice needs tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise UnsupportedField("tool_choice", f"no tool named {self.tool_choice.function.name!r} is declared")

    @property
    def uses_tools(self) -> bool:
        """Whether the answer may be a tool call: tools declared and not switched off."""
        return bool(self.tools) and self.tool_choice != "none"

    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def plain_messages(self) -> list[dict[str, Any]]:
        """Messages as role/content strings, with the tool calls and results of earlier turns as OpenAI writes
        them: what every backend understands (the local one renders the tool parts as text)."""
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            msg: dict[str, Any] = {"role": role, "content": m.text()}
            if m.tool_calls:
                msg["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            if m.tool_call_id:
                msg["tool_call_id"] = m.tool_call_id
            out.append(msg)
        return out

    @property
    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class FeedbackRequest(BaseModel):
    """``{"id": "chatcmpl-hg-...", "rating": "good"}``; a rating is good/bad or a number from 0 (bad) to 1 (good)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        return _refuse_lone_surrogates(data)
    rating: Literal["good", "bad"] | Annotated[float, Field(ge=0.0, le=1.0, description="0 (bad) to 1 (good)")]

    def score(self) -> float:
        if self.rating == "good":
            return 1.0
        if self.rating == "bad":
            return 0.0
        return float(self.rating)
