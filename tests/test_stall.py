"""One heavy request must not stall the gateway: the work that grows with a request runs off the event loop.

Before, an e-mail pattern that backtracked quadratically kept the event loop busy for minutes on one
600 KB message (/healthz timed out after 117 s); then rendering the chat template, tokenising and compiling
grammars in ``LlamaBackend._prepare`` ran on the loop (issue 23, finding 4: /healthz waited 120-374 ms
behind a 1 MB message, 128 long tools, a 10,000-property schema or 2,048 messages). Timings depend on the
machine, so this test does not time anything: it records which thread runs each piece of heavy work and
fails if any ran on the event loop's thread. ``bench/stall.py`` measures /healthz during the same probes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import litellm
import pytest

from hybridgate.classifiers.embedder import CachedEmbedder
from hybridgate.classifiers.static_vectors import StaticEmbedder
from hybridgate.router.privacy import PersonalDataDetector
from hybridgate.serving.backends import remote_openai
from hybridgate.serving.backends.local_llama import LlamaBackend
from tests.conftest import ServerThread

WORST = [
    "@ " + "a." * 300_000,  # the e-mail pattern's worst case
    "x@" + "a" * 600_000,
    "4111 " * 120_000,  # long runs of digits and separators: card, IBAN and phone scans
    "(" * 500_000,
    "word " * 120_000,  # tokeniser and template on a long prompt
]
# The work that grows with a request: rendering and tokenising, grammar compiles, scans and embeddings.
HEAVY: list[tuple[Any, str]] = [
    (LlamaBackend, "_prepare"),
    (LlamaBackend, "render"),
    (LlamaBackend, "_grammar"),
    (LlamaBackend, "count_text_tokens"),
    (PersonalDataDetector, "find"),
    (StaticEmbedder, "encode"),
    (CachedEmbedder, "encode"),
    # The cloud call: litellm's OpenAI client transforms every message through its TypedDicts before sending
    # (about 120 ms on the loop for 2,048 messages: the stall after decide()); the native transport encodes the
    # body (the same size of work) before sending.
    (litellm, "acompletion"),
    (remote_openai, "encoded"),
]
# What each transport's cloud call must be seen doing off the loop.
CLOUD_WORK = {"litellm": "litellm.acompletion", "openai": "hybridgate.serving.backends.remote_openai.encoded"}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def probes() -> list[tuple[str, dict[str, Any]]]:
    """The probes of finding 4 (smaller: what matters here is where the work runs, not how long it takes)."""
    tools = [{"type": "function", "function": {"name": f"t{i}", "description": "describe " * 20, "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}} for i in range(128)]
    schema = {"type": "object", "properties": {f"p{k}": {"type": "string"} for k in range(200)}}
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(2047)] + user("now?")
    local = {"model": "hybridgate/local", "max_tokens": 1}
    return [
        ("a long message, local", {**local, "messages": user("word " * 20_000)}),
        ("personal data, local", {**local, "messages": user("mail ada@example.org, card 4111 1111 1111 1111. " * 500)}),
        ("128 tools, local", {**local, "messages": user("weather?"), "tools": tools}),
        ("a json_schema, local", {**local, "messages": user("fill it"), "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}),
        ("2,048 messages, local", {**local, "messages": many}),
        ("2,048 messages, cloud", {"model": "hybridgate/cloud", "max_tokens": 1, "messages": many}),
        ("2,048 messages, auto", {"model": "hybridgate/auto", "max_tokens": 1, "messages": many}),
        ("short, streamed", {**local, "messages": user("hello"), "stream": True}),
    ]


@pytest.fixture
def on_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """(function, thread id) for every call of the heavy functions, wherever they run."""
    calls: list[tuple[str, int]] = []
    for owner, name in HEAVY:
        original = getattr(owner, name)

        def wrapped(*a: Any, __original: Callable[..., Any] = original, __name: str = f"{getattr(owner, '__name__', owner)}.{name}", **kw: Any) -> Any:
            calls.append((__name, threading.get_ident()))
            return __original(*a, **kw)

        monkeypatch.setattr(owner, name, functools.wraps(original)(wrapped))
    calls.clear()
    yield calls


@pytest.mark.parametrize("transport", ["openai", "litellm"])
def test_heavy_work_runs_off_the_event_loop(make_gateway: Callable[..., ServerThread], on_threads: list[tuple[str, int]], transport: str) -> None:
    gw = make_gateway(server={"max_body_bytes": 4_000_000}, privacy={"names": ["Ada Lovelace"]}, cloud={"transport": transport})
    loop_thread = gw.thread.ident
    seen: set[str] = set()
    with httpx.Client(timeout=300) as c:
        for name, body in probes():
            before = len(on_threads)
            r = c.post(f"{gw.url}/v1/chat/completions", json=body)
            assert r.status_code < 500, (name, r.text[:300])
            ran = on_threads[before:]
            on_loop = sorted({fn for fn, thread in ran if thread == loop_thread})
            assert not on_loop, f"{name}: {on_loop} ran on the event loop"
            seen |= {fn for fn, _ in ran}
        for text in WORST:  # the scans' worst cases, through the decision alone
            before = len(on_threads)
            r = c.post(f"{gw.url}/v1/route", json={"model": "hybridgate/auto", "messages": user(text)})
            assert r.status_code < 500
            assert not [fn for fn, thread in on_threads[before:] if thread == loop_thread]
    # The instruments saw the work (a rename would otherwise make this test pass without looking).
    assert {"LlamaBackend._prepare", "LlamaBackend.render", "LlamaBackend._grammar", "PersonalDataDetector.find", "StaticEmbedder.encode", CLOUD_WORK[transport]} <= seen, seen


def test_compiled_grammars_are_a_bounded_lru(local_model: LlamaBackend) -> None:
    from hybridgate.serving.backends import local_llama

    local_model._grammars.clear()
    size = local_llama.GRAMMAR_CACHE_SIZE
    schemas = [{"type": "object", "properties": {f"k{i}": {"type": "string"}}} for i in range(size + 2)]
    first = local_model._grammar(schemas[0])
    for s in schemas[1:size]:
        local_model._grammar(s)
    assert local_model._grammar(schemas[0]) is first  # a hit refreshes the first schema...
    local_model._grammar(schemas[size])
    local_model._grammar(schemas[size + 1])
    assert len(local_model._grammars) == size  # ...so the two oldest others were dropped, never it
    assert local_model._grammar(schemas[0]) is first
