"""Structured output and tool calls on the local model: what to constrain its decoding to, and how to read it.

A small model cannot be trusted to write valid JSON, let alone JSON that
matches a schema; llama.cpp can be made to: its sampler follows a grammar, and
llama-cpp-python turns a JSON schema into one. So:

- ``response_format: json_object`` decodes under a grammar of flat JSON
  objects (:data:`FLAT_OBJECT_GBNF`);
  ``json_schema`` under the grammar of the given schema, so the answer always
  parses and validates (unless it runs out of ``max_tokens``, which a client
  sees as ``finish_reason: length``, as with OpenAI).
- ``tools`` turn into one schema with two kinds of answer: a call
  ``{"tool_call": {"name": ..., "arguments": {...}}}`` whose arguments follow
  that tool's parameters, or, when the model may also answer in words
  (``tool_choice: auto``), ``{"content": "..."}``. A named ``tool_choice`` or
  ``required`` leaves only the calls. The tools are described to the model in
  a system message, since its chat template knows nothing of them.

Strings and arrays without a bound get one, short enough for all of them to fit
the answer's ``max_tokens``, and a two-sided numeric range (which the grammar
cannot express) is spelt out as the values it allows: each a stricter schema,
so whatever matches it matches the client's. A small model under a grammar can
otherwise fill ``max_tokens`` with one string and never close the object, or
write an age of 480 where the schema says at most 130.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

MAX_STRING = 120  # characters, for a string the schema leaves unbounded
MAX_ITEMS = 8  # elements, for an array the schema leaves unbounded

# ``json_object`` asks for any JSON object. llama.cpp's general JSON grammar lets a small model nest and add keys
# until max_tokens cuts the object off (greedy SmolLM2 did, every time); this one is a flat object of one to 8
# keys (an empty object answers nothing) with short scalar values: still a JSON object, and one that closes.
# Which keys, only a schema can say: json_object carries none (use json_schema for that).
FLAT_OBJECT_GBNF = r"""
root ::= "{" ws pair ( "," ws pair ){0,7} ws "}"
pair ::= string ws ":" ws value
value ::= string | number | "true" | "false" | "null"
string ::= "\"" char{0,120} "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt]
number ::= "-"? [0-9]{1,12} ( "." [0-9]{1,6} )?
ws ::= [ \t\n]{0,2}
"""


class StructuredOutputError(ValueError):
    """The client's schema cannot be turned into a grammar; the message says why."""


def _range(schema: dict[str, Any]) -> list[float] | None:
    """The values a two-sided numeric range may take, for the grammar (which knows no minimum or maximum):
    every integer of a span up to 1,000, or 101 evenly spaced numbers (two decimals) of a real span."""
    lo, hi = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum", schema.get("exclusiveMaximum"))
    if not isinstance(lo, int | float) or not isinstance(hi, int | float) or hi < lo:
        return None
    if schema.get("type") == "integer":
        values: list[float] = list(range(math.ceil(lo), math.floor(hi) + 1)) if hi - lo <= 1000 else []
    else:
        values = sorted({round(lo + (hi - lo) * i / 100, 2) for i in range(101)})
    values = [v for v in values if lo <= v <= hi and v != schema.get("exclusiveMinimum") and v != schema.get("exclusiveMaximum")]
    return values or None


def string_slots(schema: Any, depth: int = 0) -> int:
    """How many strings an answer to ``schema`` may hold (an array counts its items): what a length budget is
    shared between."""
    if depth > 32 or not isinstance(schema, dict):
        return 0
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    n = 1 if "string" in kinds and "enum" not in schema and "const" not in schema and "format" not in schema else 0
    n += sum(string_slots(v, depth + 1) for v in (schema.get("properties") or {}).values())
    for key in ("anyOf", "oneOf"):
        n += max((string_slots(v, depth + 1) for v in schema.get(key) or []), default=0)
    if isinstance(schema.get("items"), dict):
        n += string_slots(schema["items"], depth + 1) * min(int(schema.get("maxItems", MAX_ITEMS)), MAX_ITEMS)
    return n


def bounded(schema: Any, depth: int = 0, max_string: int = MAX_STRING) -> Any:
    """A copy of ``schema`` the grammar can keep: a length on every unbounded string and array, and a two-sided
    numeric range spelt out as the values it allows. Each is a stricter schema than the client's."""
    if depth > 32 or not isinstance(schema, dict):
        return schema
    out = {k: bounded(v, depth + 1, max_string) if k in ("items", "additionalProperties", "not") else v for k, v in schema.items()}
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = {k: bounded(v, depth + 1, max_string) for k, v in schema[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(schema.get(key), list):
            out[key] = [bounded(v, depth + 1, max_string) for v in schema[key]]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "string" in kinds and "enum" not in schema and "const" not in schema and "format" not in schema:
        out["maxLength"] = max(min(max_string, int(schema.get("maxLength", max_string))), int(schema.get("minLength", 0)))
    if "array" in kinds and "maxItems" not in schema:
        out["maxItems"] = max(MAX_ITEMS, int(schema.get("minItems", 0)))
    if kind in ("integer", "number") and "enum" not in schema and (values := _range(schema)) is not None:
        out = {"enum": values}
    return out


def budget_bounded(schema: dict[str, Any], max_tokens: int | None) -> dict[str, Any]:
    """:func:`bounded`, with strings short enough that all of them fit ``max_tokens`` together: an answer that
    runs out of tokens does not parse. A character can cost a whole token (SmolLM2 reads digits one by one, and
    filled three date strings with them), so what the keys leave (about six tokens each) is shared, 60 % of it,
    as one token a character; the rest is for numbers and punctuation."""
    slots = string_slots(schema)
    if not slots or not max_tokens:
        return bounded(schema)
    spare = max(0, max_tokens - 6 * _properties(schema) - 8)  # about six tokens a key with its quotes and colon
    return bounded(schema, max_string=max(4, min(MAX_STRING, (3 * spare) // (5 * slots))))


def _properties(schema: Any, depth: int = 0) -> int:
    if depth > 32 or not isinstance(schema, dict):
        return 0
    n = sum(1 + _properties(v, depth + 1) for v in (schema.get("properties") or {}).values())
    n += max((_properties(v, depth + 1) for v in (schema.get("anyOf") or schema.get("oneOf") or [])), default=0)
    return n + _properties(schema.get("items"), depth + 1)


def _object_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return params if params else {"type": "object", "properties": {}}


def tool_schema(tools: list[dict[str, Any]], tool_choice: Any, max_tokens: int | None = None) -> dict[str, Any]:
    """The one schema a local answer to a request with tools must follow."""
    named = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                # the wrapper (tool_call, name and the tool's name) takes about 16 tokens of the budget
                "arguments": budget_bounded(_object_params(t["function"].get("parameters")), None if max_tokens is None else max_tokens - 16),
            },
            "required": ["name", "arguments"],
        }
        for t in tools
        if named is None or t["function"]["name"] == named
    ]
    call = {"type": "object", "properties": {"tool_call": calls[0] if len(calls) == 1 else {"oneOf": calls}}, "required": ["tool_call"]}
    if tool_choice in (None, "auto"):
        words = {"type": "object", "properties": {"content": {"type": "string", "maxLength": MAX_STRING}}, "required": ["content"]}
        return {"oneOf": [call, words]}
    return call


def tool_instructions(tools: list[dict[str, Any]], tool_choice: Any) -> str:
    lines = ["You can call these tools. To call one, answer with a JSON object {\"tool_call\": {\"name\": ..., \"arguments\": {...}}}."]
    if tool_choice in (None, "auto"):
        lines.append('If no tool is needed, answer with {"content": "your answer"}.')
    for t in tools:
        fn = t["function"]
        lines.append(f"- {fn['name']}: {fn.get('description') or ''} parameters: {json.dumps(_object_params(fn.get('parameters')))}")
    return "\n".join(lines)


def local_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_choice: Any) -> list[dict[str, Any]]:
    """The conversation as a chat template without tool support can render it: earlier calls and their results
    as text, and the tools described in a system message."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]
            text = (m.get("content") or "") + ("\n" if m.get("content") else "") + "Tool calls: " + json.dumps(calls)
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"Result of tool call {m.get('tool_call_id', '')}: {m.get('content') or ''}"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    if tools and tool_choice != "none":
        out.insert(0, {"role": "system", "content": tool_instructions(tools, tool_choice)})
    return out


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def schema_gbnf(schema: dict[str, Any]) -> str:
    """llama-cpp-python's grammar for ``schema``, in the client's property order, with JSON's own string characters:
    its converter lets a string hold raw newlines and other control characters, which no JSON parser accepts
    (SmolLM2 wrote one into a tool's argument)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return "\n".join(_JSON_CHAR + line[len(_LOOSE_CHAR) :] if line.startswith(_LOOSE_CHAR) else line for line in gbnf.split("\n"))


def grammar_schema(
    response_format: dict[str, Any] | None, tools: list[dict[str, Any]] | None, tool_choice: Any, max_tokens: int | None = None
) -> dict[str, Any] | None:
    """The schema the local answer is constrained to, or None (free text). ``{}`` stands for any JSON object."""
    if tools and tool_choice != "none":
        return tool_schema(tools, tool_choice, max_tokens)
    if not response_format or response_format.get("type") == "text":
        return None
    if response_format["type"] == "json_object":
        return {}
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return budget_bounded(schema, max_tokens) if schema else {}


def read_tool_answer(text: str) -> tuple[str, list[dict[str, Any]] | None]:
    """(content, tool calls) of a local answer decoded under :func:`tool_schema`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text, None  # cut off by max_tokens: what there is, as text
    if isinstance(data, dict) and isinstance(data.get("tool_call"), dict):
        call = data["tool_call"]
        return "", [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": str(call.get("name", "")), "arguments": json.dumps(call.get("arguments", {}))},
            }
        ]
    if isinstance(data, dict) and "content" in data:
        return str(data["content"]), None
    return text, None


def invalid(text: str, response_format: dict[str, Any] | None) -> str | None:
    """Why ``text`` does not meet ``response_format`` (None when it does, or when nothing is asked)."""
    if not response_format or response_format.get("type") == "text":
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at {exc.pos}"
    if response_format["type"] == "json_object":
        return None if isinstance(data, dict) else "not a JSON object"
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    import jsonschema

    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        return f"does not match the schema: {exc.message[:200]}"
    except jsonschema.SchemaError as exc:
        return f"the schema is not valid: {exc.message[:200]}"
    return None
