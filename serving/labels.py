"""Labels for training the router, from this gateway's own answers: held vectors, ratings, shadow comparisons.

An answer's query vector (never its text) is held under the answer's id for a
while; a user's rating turns it into a label, a cascade is one by itself, and a
sampled local answer is compared with the cloud's by the cloud (the shadow
comparison). Labels feed the router's adaptation here and federated training.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from hybridgate.router import EmbeddingScorer, PersonalDataDetector, Route, RoutingPolicy
from hybridgate.serving.accounting import Accounting
from hybridgate.serving.backends.base import Backend, ChatParams, Usage
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.backends.pricing import cost_usd
from hybridgate.serving.config import GatewayConfig, RemoteConfig
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.records import Routing, query_text
from hybridgate.serving.state import StateStore
from hybridgate.serving.state.base import key_id

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Two answers to the same question follow. Reply with the single letter of the better answer, A or B.\n\n"
    "Question:\n{q}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nBetter answer (A or B):"
)


class Labels:
    """Holds answers for feedback, runs the sampled shadow comparisons, and stores the labels they give."""

    def __init__(
        self,
        cfg: GatewayConfig,
        state: StateStore,
        metrics: Metrics,
        policy: RoutingPolicy,
        local: LlamaBackend,
        backends: Mapping[str, Backend],
        remote_cfg: Mapping[str, RemoteConfig],
        detector: PersonalDataDetector,
        accounting: Accounting,
        cpu: Executor,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.policy = policy
        self.local = local
        self.backends = backends
        self.remote_cfg = remote_cfg
        self.detector = detector
        self.accounting = accounting
        self._cpu = cpu
        self.shadows: set[asyncio.Task[None]] = set()

    def shadow_due(self, routing: Routing) -> bool:
        """A sampled quality inspection: a local answer to a query with no privacy constraint, at ``shadow_rate``."""
        rate = self.cfg.state.shadow_rate
        d = routing.decision
        if rate <= 0 or routing.route is not Route.LOCAL or d.private or d.redact_only or d.personal_data:
            return False
        # Sampled by the answer id's hash, so the share is exact over many requests and a test can force it.
        return int(hashlib.sha256(routing.request_id.encode()).hexdigest()[:8], 16) / 2**32 < rate

    async def shadow(
        self, routing: Routing, messages: list[dict[str, Any]], local_text: str, held: dict[str, Any], api_key: str | None
    ) -> None:
        """Ask the cloud too, then let the cloud judge which answer is better; the verdict is a label."""
        cloud_name = next((n for n, b in self.backends.items() if b.route is Route.CLOUD and b.health.healthy), None)
        if cloud_name is None:
            return
        if await asyncio.get_running_loop().run_in_executor(self._cpu, self.detector.kinds, [local_text]):
            return  # the judge would read the local answer: one that holds personal data stays on the device
        cloud, rcfg, kid = self.backends[cloud_name], self.remote_cfg.get(cloud_name), key_id(api_key)
        limit = self.cfg.budgets.limit_for(api_key or "")
        reserved = 0.0
        if limit is not None and rcfg is not None:
            # Two calls: the question again, then the judge reading both answers (about four characters a token).
            chars = sum(len(m["content"]) for m in messages)
            worst = cost_usd(rcfg, Usage(2 * chars // 3 + len(local_text) // 3 + 400, 2 * self.local.default_max_tokens + 2))
            if not await self.state.reserve(kid, worst, limit):
                return
            reserved = worst
        try:
            try:
                theirs = await cloud.complete(ChatParams(messages=messages, max_tokens=self.local.default_max_tokens))
                question = messages[-1]["content"]
                verdict = await cloud.complete(
                    ChatParams(messages=[{"role": "user", "content": JUDGE_PROMPT.format(q=question, a=local_text, b=theirs.text)}], max_tokens=2)
                )
            except Exception as exc:  # noqa: BLE001 - an inspection that fails is just skipped
                log.info("shadow comparison skipped: %s", exc)
                return
            spent = Usage(theirs.usage.prompt_tokens + verdict.usage.prompt_tokens, theirs.usage.completion_tokens + verdict.usage.completion_tokens)
            joules = self.accounting.cloud_energy(spent.prompt_tokens, spent.completion_tokens)
            self.metrics.energy.labels("shadow", "cloud", joules.method).inc(joules.joules)
            await self.state.record_usage(
                kid, prompt_tokens=spent.prompt_tokens, completion_tokens=spent.completion_tokens,
                cloud_cost_usd=cost_usd(rcfg, spent) if rcfg is not None else 0.0, energy_joules=joules.joules,
            )
        finally:
            if reserved:
                await self.state.release(kid, reserved)
        pick = verdict.text.strip().upper()[:1]
        if pick in ("A", "B"):
            await self.add_label(held, int(pick == "B"), "shadow", None)

    async def hold_for_feedback(
        self, routing: Routing, messages: list[dict[str, Any]], api_key: str | None, answer: str | None = None
    ) -> None:
        """Keep the query's vector under the answer's id, so a rating can turn it into a label; never the text."""
        if routing.decision.score is None or not self.cfg.state.labels:  # unscored (pinned): nothing to label
            return
        scorer = self.policy.snapshot.scorer  # one scorer for the vector, the base score and the inputs
        if not isinstance(scorer, EmbeddingScorer):  # a runtime Protocol check: dearer than the two above
            return
        embedder = scorer.embedder

        def vector_base_inputs() -> tuple[list[float], float | None, Any]:  # embedding and scoring: CPU work, off the loop
            text = query_text(messages)
            vector = embedder.encode([text])[0]
            inputs = scorer.label_inputs(text, len(messages))
            base = scorer.base_score(vector, text, len(messages))
            return [round(float(v), 6) for v in vector], base, inputs

        vector, base, inputs = await asyncio.get_running_loop().run_in_executor(self._cpu, vector_base_inputs)
        record = {
            "key": key_id(api_key),
            "embedder": embedder.name,
            "vector": vector,
            "route": routing.route.value,
            "score": routing.decision.score,
            "base_score": base,
            "inputs": inputs,  # shape numbers, no text
            "router_version": routing.decision.router_version,
        }
        await self.state.hold(routing.request_id, record, self.cfg.state.label_hold_s)
        if answer is not None and self.shadow_due(routing):
            task = asyncio.get_running_loop().create_task(self.shadow(routing, messages, answer, record, api_key))
            self.shadows.add(task)
            task.add_done_callback(self.shadows.discard)
        if routing.collab is not None and routing.collab.escalated is not None:
            # A cascade is a label by itself: an escalation says the local answer was not good enough.
            await self.add_label(record, int(routing.collab.escalated), "cascade", None)

    async def add_label(self, held: dict[str, Any], label: int, source: str, rating: float | None) -> None:
        await self.state.add_label(
            {
                "ts": round(time.time(), 3),
                "embedder": held["embedder"],
                "vector": held["vector"],
                "label": label,
                "source": source,
                "rating": rating,
                "route": held["route"],
                # The router's own score then, so a label can train a correction on top of that router.
                "base_score": held.get("base_score"),
                "inputs": held.get("inputs"),  # what an outcomes router reads beyond the vector: its local ability's fit
                "router_version": held.get("router_version"),
            }
        )

    async def feedback(self, request_id: str, rating: float, api_key: str | None) -> dict[str, Any] | None:
        """A user's rating of one answer (0 bad .. 1 good); None when the id is unknown, expired or not this key's.

        The label is "the cloud was needed": a bad local answer says yes, a good
        one no, a bad cloud answer no (the cloud did not help); a good cloud
        answer says nothing about the local model, so it is not a label.
        """
        held = await self.state.take_held(request_id, key_id(api_key))
        if held is None:
            return None
        await self.state.rate(request_id, rating)  # beside the decision log, for the dashboard's Feedback column
        good = rating >= 0.5
        label: int | None
        if held["route"] == Route.LOCAL.value:
            label = 0 if good else 1
        else:
            label = None if good else 0
        if label is not None:
            await self.add_label(held, label, "feedback", rating)
        return {"object": "hybridgate.feedback", "id": request_id, "rating": rating, "label": label, "stored": label is not None}

    async def drain(self) -> None:
        """Wait until the shadow comparisons left behind are done: what the cloud was sent is then all sent."""
        while self.shadows:
            await asyncio.gather(*list(self.shadows), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self.shadows):
            task.cancel()
