"""Collaborative answers: the local side does the preliminary work, the cloud side the rest.

The router picks the mode; this module carries it out in two steps. ``plan``
runs the local part and says what, if anything, the cloud must still do;
``complete`` / ``stream`` run the final stage (streamed) and fall back to a
plain answer when one side fails:

- **cascade**: the local model answers; its confidence (the geometric-mean
  probability of its tokens) keeps the answer, or escalates to the cloud;
- **condense**: the cloud reads only the passages of a long prompt that the
  question needs (``condense.py``);
- **redact**: personal data becomes placeholders before the cloud call and is
  restored in the answer (``redaction.py``);
- **draft-refine**: the local model drafts, the cloud model corrects and
  completes the draft.

If the local model fails in cascade or draft-refine, the cloud answers the
original request (redact and condense do their local part without it).
If the cloud side fails, a local draft is returned when there is one, or the
local model answers the original request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybridgate.router import Mode, PersonalDataDetector
from hybridgate.serving.backends.base import Backend, ChatParams, Completion, Delta, Usage
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.condense import condense, word_overlap
from hybridgate.serving.config import CollaborationConfig
from hybridgate.serving.redaction import Redaction, StreamRestorer, redact_request, with_arguments
from hybridgate.serving.structured import invalid

log = logging.getLogger(__name__)

REFINE_PROMPT = (
    "A smaller model wrote the draft answer below. Correct what is wrong, complete what is missing, and reply "
    "with the final answer only.\n\nDraft answer:\n{draft}"
)


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens)


@dataclass
class CollabReport:
    """What each side did; it travels under ``hybridgate.collaboration``."""

    mode: Mode
    local: Usage = field(default_factory=lambda: Usage(0, 0))
    cloud: Usage = field(default_factory=lambda: Usage(0, 0))
    cloud_calls: int = 0
    escalated: bool | None = None
    confidence: float | None = None
    redacted: int | None = None
    context_tokens: int | None = None
    kept_tokens: int | None = None
    fallback: str | None = None

    @property
    def total(self) -> Usage:
        return _add(self.local, self.cloud)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode.value,
            "usage": {
                "local": {"prompt_tokens": self.local.prompt_tokens, "completion_tokens": self.local.completion_tokens},
                "cloud": {"prompt_tokens": self.cloud.prompt_tokens, "completion_tokens": self.cloud.completion_tokens},
            },
            "cloud_calls": self.cloud_calls,
        }
        if self.escalated is not None:
            out["escalated"] = self.escalated
            out["confidence"] = None if self.confidence is None else round(self.confidence, 4)
        if self.redacted is not None:
            out["redacted"] = self.redacted
        if self.context_tokens is not None:
            out["context_tokens"] = self.context_tokens
            out["kept_tokens"] = self.kept_tokens
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def merged_report(reports: list[CollabReport]) -> CollabReport:
    """One report for a mode run once per choice (n > 1): the last one's details, everyone's usage and calls."""
    out = replace(reports[-1])
    out.local, out.cloud, out.cloud_calls = Usage(0, 0), Usage(0, 0), 0
    for r in reports:
        out.local, out.cloud, out.cloud_calls = _add(out.local, r.local), _add(out.cloud, r.cloud), out.cloud_calls + r.cloud_calls
    return out


@dataclass
class Plan:
    report: CollabReport
    cloud_params: ChatParams | None = None  # None: the answer is already made
    answer: Completion | None = None  # the local answer (final in a kept cascade; the fallback otherwise)
    redaction: Redaction | None = None


class Collaborator:
    def __init__(
        self,
        local: LlamaBackend,
        cfg: CollaborationConfig,
        detector: PersonalDataDetector,
        relevance: Callable[[str, Sequence[str]], np.ndarray] = word_overlap,
    ) -> None:
        self.local = local
        self.cfg = cfg
        self.detector = detector
        self.relevance = relevance

    def _count(self, text: str) -> int:
        return self.local.count_text_tokens(text)

    # -- the local part -------------------------------------------------------------------------------
    async def plan(self, mode: Mode, params: ChatParams) -> Plan:
        report = CollabReport(mode)
        # Scanning, tokenising and embedding a long prompt is CPU work: off the event loop, so that one large
        # request does not stall every other stream (and /healthz).
        if mode is Mode.REDACT:
            # Every string the cloud would read, not the content only: stop sequences, tools, schemas, ids.
            redacted, red = await asyncio.to_thread(redact_request, params, self.detector)
            report.redacted = red.count
            return Plan(report, redacted, redaction=red)
        if mode is Mode.CONDENSE:
            done = await asyncio.to_thread(
                condense, params.messages, self.relevance, self._count, self.cfg.condense_keep, self.cfg.condense_min_tokens
            )
            if done is None:
                return Plan(report, params)
            report.context_tokens, report.kept_tokens = done.context_tokens, done.kept_tokens
            return Plan(report, replace(params, messages=done.messages))
        if params.uses_tools:
            # A draft cannot be a tool call, and a call is not refined: the cloud answers a request with tools.
            report.fallback = "the request declares tools: the cloud answers it alone"
            return Plan(report, params)
        limit = self.cfg.cascade_max_tokens if mode is Mode.CASCADE else self.cfg.draft_max_tokens
        local_params = replace(params, max_tokens=min(params.max_tokens or limit, limit))
        try:
            draft = await self.local.complete(local_params, confidence=mode is Mode.CASCADE)
        except Exception as exc:  # noqa: BLE001 - any local failure leaves the whole answer to the cloud
            log.warning("%s: the local side failed (%s); the cloud answers alone", mode.value, exc)
            report.fallback = f"local failed: {exc}"[:200]
            return Plan(report, params)
        report.local = draft.usage
        if mode is Mode.CASCADE:
            report.confidence = draft.confidence
            keep = draft.confidence is not None and draft.confidence >= self.cfg.cascade_min_confidence
            broken = invalid(draft.text, params.response_format)
            if broken:  # constrained decoding only breaks the format when max_tokens cuts the answer off
                keep, report.fallback = False, f"the local answer {broken}"[:200]
            report.escalated = not keep
            return Plan(report, None if keep else params, answer=draft)
        refine = [*params.messages, {"role": "assistant", "content": draft.text}, {"role": "user", "content": REFINE_PROMPT.format(draft=draft.text)}]
        return Plan(report, replace(params, messages=refine), answer=draft)

    # -- the final stage ------------------------------------------------------------------------------
    async def complete(self, plan: Plan, cloud: Backend, params: ChatParams) -> Completion:
        if plan.cloud_params is None:
            assert plan.answer is not None
            return replace(plan.answer, usage=plan.report.total)
        try:
            plan.report.cloud_calls += 1
            out = await cloud.complete(plan.cloud_params)
        except Exception as exc:  # noqa: BLE001 - the local side answers instead
            return replace(await self._local_fallback(plan, params, exc), usage=plan.report.total)
        plan.report.cloud = out.usage
        if plan.redaction is None:
            return replace(out, usage=plan.report.total)
        calls = with_arguments(out.tool_calls or [], plan.redaction.restore_arguments)
        return replace(out, text=plan.redaction.restore(out.text), tool_calls=calls or None, usage=plan.report.total)

    async def _local_fallback(self, plan: Plan, params: ChatParams, exc: Exception) -> Completion:
        log.warning("%s: the cloud side failed (%s); answering locally", plan.report.mode.value, exc)
        plan.report.fallback = f"cloud failed: {exc}"[:200]
        if plan.answer is not None:
            return plan.answer
        answer = await self.local.complete(params)
        plan.report.local = _add(plan.report.local, answer.usage)
        return answer

    async def stream(self, plan: Plan, cloud: Backend, params: ChatParams) -> AsyncGenerator[Delta, None]:
        """The final stage as deltas; the last delta carries the usage of both sides together."""
        if plan.cloud_params is None:
            assert plan.answer is not None
            async for d in self._replay(plan.answer, plan):
                yield d
            return
        plan.report.cloud_calls += 1
        it = cloud.stream(plan.cloud_params)
        try:
            first = await anext(it)
        except Exception as exc:  # noqa: BLE001 - before the first piece, the local side can still answer
            if plan.answer is not None:
                plan.report.fallback = f"cloud failed: {exc}"[:200]
                async for d in self._replay(plan.answer, plan):
                    yield d
                return
            plan.report.fallback = f"cloud failed: {exc}"[:200]
            async for d in self._local_stream(plan, params):
                yield d
            return
        restorer = StreamRestorer(plan.redaction) if plan.redaction else None
        arg_restorers: dict[int, StreamRestorer] = {}  # one per streamed tool call: arguments arrive in pieces too
        delta: Delta | None = first
        while delta is not None:
            if delta.usage is not None:
                plan.report.cloud = delta.usage
            text = restorer.feed(delta.text) if restorer else delta.text
            calls = delta.tool_calls
            if calls and plan.redaction is not None:
                calls = [self._restore_call(c, arg_restorers, plan.redaction) for c in calls]
            if delta.finish_reason:
                text += restorer.flush() if restorer else ""
                tail = [{"index": i, "function": {"arguments": r.flush()}} for i, r in arg_restorers.items()]
                if any(t["function"]["arguments"] for t in tail):
                    yield Delta(tool_calls=[t for t in tail if t["function"]["arguments"]])
                yield Delta(text=text, finish_reason=delta.finish_reason, usage=plan.report.total)
            elif text or calls:
                yield Delta(text=text, tool_calls=calls)
            delta = await anext(it, None)

    @staticmethod
    def _restore_call(call: dict[str, Any], restorers: dict[int, StreamRestorer], redaction: Redaction) -> dict[str, Any]:
        fn = call.get("function") or {}
        if not fn.get("arguments"):
            return call
        r = restorers.setdefault(int(call.get("index", 0)), StreamRestorer(redaction, arguments=True))
        return {**call, "function": {**fn, "arguments": r.feed(fn["arguments"])}}

    async def _local_stream(self, plan: Plan, params: ChatParams) -> AsyncGenerator[Delta, None]:
        async for d in self.local.stream(params):
            if d.usage is not None:
                plan.report.local = _add(plan.report.local, d.usage)
                yield Delta(text=d.text, finish_reason=d.finish_reason, usage=plan.report.total)
            else:
                yield d

    async def _replay(self, answer: Completion, plan: Plan) -> AsyncGenerator[Delta, None]:
        """A finished local answer, streamed in word-sized pieces so clients see the same shape as a live stream."""
        words = answer.text.split(" ")
        for w in words[:-1]:
            yield Delta(text=w + " ")
        yield Delta(text=words[-1], finish_reason=answer.finish_reason, usage=plan.report.total)
