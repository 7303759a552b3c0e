"""Structured output and tool calls on the local model: does every answer parse and validate, what does the
grammar cost, and how often does a 135M model call the right tool.

Structured: 50 short texts (``bench/prompts/structured.jsonl``) x 5 JSON schemas, each answered by the local
model (SmolLM2-135M-Instruct in process, greedy) under ``response_format: json_schema``; every answer is
parsed and validated with jsonschema. The same 50 texts are also answered without a format, so the added
cost of constrained decoding is measured in milliseconds per generated token, in the same run.

Tools: 20 requests (``bench/prompts/tools.jsonl``) that each need one of 5 declared tools, with
``tool_choice: required`` and ``auto``: the share of well-formed calls (the tool exists, the arguments parse
and match its schema) and the share of calls to the right tool. No target for the last: it tells a user what
to expect of a tiny model, and why ``router.tools`` sends tools to the cloud by default.

Prints a table, writes ``bench/results/structured_output.json``.

    python bench/structured_output.py [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console
from rich.table import Table

from hybridgate.serving.backends.base import ChatParams
from hybridgate.serving.backends.local_llama import LlamaBackend

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 130}, "occupation": {"type": "string"}},
        "required": ["name", "age", "occupation"],
        "additionalProperties": False,
    },
    "product": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "price": {"type": "number", "minimum": 0},
            "in_stock": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["name", "price", "in_stock", "tags"],
    },
    "event": {
        "type": "object",
        "properties": {"title": {"type": "string"}, "date": {"type": "string"}, "location": {"type": "string"}, "attendees": {"type": "integer", "minimum": 0}},
        "required": ["title", "date", "location", "attendees"],
    },
    "sentiment": {
        "type": "object",
        "properties": {"label": {"enum": ["positive", "negative", "neutral"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["label", "confidence"],
    },
    "summary": {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 80}, "points": {"type": "array", "items": {"type": "string", "maxLength": 120}, "minItems": 1, "maxItems": 3}},
        "required": ["title", "points"],
    },
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "calculate", "description": "Evaluate an arithmetic expression.", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email.", "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}}, "required": ["to", "body"]}}},
    {"type": "function", "function": {"name": "search_flights", "description": "Search flights between two cities on a date.", "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}, "date": {"type": "string"}}, "required": ["origin", "destination"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current local time in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def timed(local: LlamaBackend, params: ChatParams) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = await local.complete(params)
    return out, time.perf_counter() - t0


async def structured(local: LlamaBackend, texts: list[str], max_tokens: int) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    free_ms_per_token: list[float] = []
    for t in texts:
        msgs = [{"role": "user", "content": f"Describe this as JSON: {t}"}]
        out, s = await timed(local, ChatParams(messages=msgs, max_tokens=max_tokens, temperature=0.0))
        free_ms_per_token.append(1000 * s / max(1, out.usage.completion_tokens))
    for name, schema in SCHEMAS.items():
        ok = parsed = 0
        ms_per_token: list[float] = []
        failures: list[str] = []
        for t in texts:
            msgs = [{"role": "user", "content": f"Describe this as JSON ({name}): {t}"}]
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
            out, s = await timed(local, ChatParams(messages=msgs, max_tokens=max_tokens, temperature=0.0, response_format=fmt))
            ms_per_token.append(1000 * s / max(1, out.usage.completion_tokens))
            try:
                data = json.loads(out.text)
                parsed += 1
                jsonschema.validate(data, schema)
                ok += 1
            except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
                failures.append(f"{out.finish_reason}: {str(exc)[:80]}")
        rows[name] = {"n": len(texts), "parsed": parsed, "valid": ok, "ms_per_token_p50": round(statistics.median(ms_per_token), 2), "failures": failures[:5]}
    free = statistics.median(free_ms_per_token)
    return {"free_ms_per_token_p50": round(free, 2), "schemas": rows}


async def tools(local: LlamaBackend, cases: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for choice in ("required", "auto"):
        called = well_formed = right = 0
        for c in cases:
            msgs = [{"role": "user", "content": c["prompt"]}]
            ans = await local.complete(ChatParams(messages=msgs, max_tokens=max_tokens, temperature=0.0, tools=TOOLS, tool_choice=choice))
            if not ans.tool_calls:
                continue
            called += 1
            fn = ans.tool_calls[0]["function"]
            try:
                jsonschema.validate(json.loads(fn["arguments"]), PARAMS[fn["name"]])
                well_formed += 1
            except (KeyError, json.JSONDecodeError, jsonschema.ValidationError):
                pass
            right += fn["name"] == c["tool"]
        out[choice] = {"n": len(cases), "called": called, "well_formed": well_formed, "right_tool": right}
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    local = LlamaBackend("local", n_ctx=1024, n_threads=2, max_queue=4, default_max_tokens=args.max_tokens)
    texts = [r["text"] for r in jsonl(ROOT / "bench" / "prompts" / "structured.jsonl")]
    cases = jsonl(ROOT / "bench" / "prompts" / "tools.jsonl")
    result = {"model": local.model_id, "max_tokens": args.max_tokens, "structured": await structured(local, texts, args.max_tokens)}
    result["tools"] = await tools(local, cases, args.max_tokens)
    await local.aclose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "structured_output.json")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    s = result["structured"]
    table = Table(title=f"local structured output ({result['model']}, greedy, max_tokens {args.max_tokens})")
    for col in ("schema", "answers", "parse", "validate", "ms/token constrained", "ms/token free", "added"):
        table.add_column(col)
    free = s["free_ms_per_token_p50"]
    for name, r in s["schemas"].items():
        table.add_row(name, str(r["n"]), f"{r['parsed']}/{r['n']}", f"{r['valid']}/{r['n']}", f"{r['ms_per_token_p50']:.1f}", f"{free:.1f}", f"{r['ms_per_token_p50'] / free:.2f}x")
    Console(width=160).print(table)
    t = Table(title="local tool calls (5 tools declared, 20 requests)")
    for col in ("tool_choice", "called", "well-formed", "right tool"):
        t.add_column(col)
    for choice, r in result["tools"].items():
        t.add_row(choice, f"{r['called']}/{r['n']}", f"{r['well_formed']}/{r['n']}", f"{r['right_tool']}/{r['n']}")
    Console(width=160).print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
