"""What leaves the device: the one definition of a cloud request's body, and every string in it.

Both remote transports send :func:`cloud_body`, built field by field from an
allow-list; anything a request carries beyond it (extra message keys, fields
the gateway accepts but ignores) never reaches a provider. The privacy scan
reads :func:`cloud_strings` of the same body, and the redact mode rewrites the
same strings: so a personal-data item in a stop sequence, a tool's description,
a parameter's ``enum`` or ``const``, a ``response_format`` schema or a tool-call
id routes the request exactly as it would in the message content, and is
replaced by the same placeholder. A field added here is scanned and redacted
without anyone remembering to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridgate.serving.backends.base import ChatParams, RequestUnsendable
from hybridgate.serving.schemas import ChatCompletionRequest

# The keys a message may carry to a provider, and those of an earlier turn's tool call.
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
TOOL_CALL_FIELDS = ("id", "type", "function")
FUNCTION_CALL_FIELDS = ("name", "arguments")
TOOL_FIELDS = ("type", "function")
FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
RESPONSE_FORMAT_FIELDS = ("type", "json_schema")
JSON_SCHEMA_FIELDS = ("name", "description", "schema", "strict")
# ``user`` leaves as a digest (never the value), so it is no text to scan.
_NOT_TEXT = frozenset({"user"})


def _pick(obj: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if isinstance(obj, dict) and obj.get(k) is not None}


def _message(m: dict[str, Any]) -> dict[str, Any]:
    out = _pick(m, MESSAGE_FIELDS)
    out["content"] = m.get("content")  # OpenAI wants the key, null included (an assistant turn of tool calls)
    if "tool_calls" in out:
        out["tool_calls"] = [{**_pick(c, TOOL_CALL_FIELDS), "function": _pick(c.get("function"), FUNCTION_CALL_FIELDS)} for c in out["tool_calls"]]
    return out


def _tool(t: dict[str, Any]) -> dict[str, Any]:
    return {**_pick(t, TOOL_FIELDS), "function": _pick(t.get("function"), FUNCTION_FIELDS)}


def _response_format(rf: dict[str, Any]) -> dict[str, Any]:
    out = _pick(rf, RESPONSE_FORMAT_FIELDS)
    if "json_schema" in out:
        out["json_schema"] = _pick(out["json_schema"], JSON_SCHEMA_FIELDS)
    return out


def cloud_body(params: ChatParams) -> dict[str, Any]:
    """The body of a cloud call for ``params``, without the provider's model name (each transport adds its own)."""
    from hybridgate.serving.backends.remote_common import pseudonym

    fields: dict[str, Any] = {
        "messages": [_message(m) for m in params.messages],
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": params.stop,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "user": None if params.user is None else pseudonym(params.user),
        "response_format": None if params.response_format is None else _response_format(params.response_format),
        "tools": None if params.tools is None else [_tool(t) for t in params.tools],
        "tool_choice": params.tool_choice,
        "parallel_tool_calls": params.parallel_tool_calls,
        "n": params.n if params.n > 1 else None,
        "logprobs": True if params.logprobs else None,
        "top_logprobs": params.top_logprobs if params.logprobs else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _walk(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it, dictionary keys included (a schema's property
    names are text the provider reads). Iterative: a schema nested thousands deep must not blow the stack."""
    if isinstance(value, str):
        return change(value)
    root: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while todo:
        src, parent, slot = todo.pop()
        if isinstance(src, str):
            parent[slot] = change(src)
        elif isinstance(src, dict):
            out: dict[str, Any] = {}
            parent[slot] = out
            for k, v in src.items():
                key = change(k) if isinstance(k, str) else k
                out[key] = None
                todo.append((v, out, key))
        elif isinstance(src, list):
            lst: list[Any] = [None] * len(src)
            parent[slot] = lst
            todo.extend((v, lst, i) for i, v in enumerate(src))
        else:
            parent[slot] = src
    return root[0]


def cloud_strings(params: ChatParams) -> list[str]:
    """Every distinct string a cloud call for ``params`` would carry (keys included), in order: what the privacy
    decision reads. Distinct: a schema of 10,000 properties repeats "type" and "string" 10,000 times."""
    found: dict[str, None] = {}
    todo = [value for name, value in cloud_body(params).items() if name not in _NOT_TEXT]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found[item] = None
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    found[k] = None
                todo.append(v)
        elif isinstance(item, list):
            todo.extend(item)
    return list(found)


def rewrite_strings(params: ChatParams, change: Callable[[str], str]) -> ChatParams:
    """``params`` as the cloud would get it, with ``change`` applied to every string in it (the redact mode)."""
    from dataclasses import replace

    body = cloud_body(params)
    out = {name: value if name in _NOT_TEXT else _walk(value, change) for name, value in body.items()}
    return replace(
        params,
        messages=out["messages"],
        stop=out.get("stop"),
        response_format=out.get("response_format"),
        tools=out.get("tools"),
        tool_choice=out.get("tool_choice"),
    )


def request_params(
    req: ChatCompletionRequest, max_tokens: int | None = None, messages: list[dict[str, Any]] | None = None
) -> ChatParams:
    """The request as every backend reads it; ``max_tokens`` is the answer limit after the key's cap, ``messages``
    its :meth:`~ChatCompletionRequest.plain_messages` where the caller has them already."""
    return ChatParams(
        messages=req.plain_messages() if messages is None else messages,
        max_tokens=max_tokens if max_tokens is not None else req.answer_limit,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop_list(),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        user=req.user,
        response_format=None if req.response_format is None or req.response_format.type == "text" else req.response_format.wire(),
        tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
        tool_choice=req.tool_choice.model_dump() if hasattr(req.tool_choice, "model_dump") else req.tool_choice,  # type: ignore[union-attr]
        parallel_tool_calls=req.parallel_tool_calls,
        n=req.n or 1,
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs,
    )


# A request this small is scanned, decided, hashed and encoded on the event loop: tens of microseconds of work,
# less than the hop to a thread and back costs (measured: two hops were a third of the pinned path's CPU).
# Anything larger, or with tools, a schema or earlier tool calls (structures of any depth), goes off the loop
# (tests/test_stall.py sends the large ones).
INLINE_CHARS = 16_384
INLINE_MESSAGES = 64


def is_small(params: ChatParams) -> bool:
    """Whether the work that grows with ``params`` is small enough to run on the event loop."""
    if params.tools or params.response_format or len(params.messages) > INLINE_MESSAGES:
        return False
    total = sum(len(s) for s in params.stop or ())
    for m in params.messages:
        content = m.get("content")
        if m.get("tool_calls") or not (content is None or isinstance(content, str)):
            return False
        total += len(content or "")
    return total <= INLINE_CHARS


def encoded(body: dict[str, Any], backend: str) -> bytes:
    """The body as the bytes that go on the wire, or :class:`RequestUnsendable` when the request's own content
    cannot be (a string no encoding holds): found before the call, it is the request's fault, not the provider's."""
    import json

    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError) as exc:
        raise RequestUnsendable(f"the request cannot be sent: {type(exc).__name__}: {str(exc)[:200]}", backend=backend) from None
