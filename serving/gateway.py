"""One request's path: describe it, let the router decide, call one backend, fall back.

This module knows nothing of HTTP; :mod:`hybridgate.serving.app` turns what it
returns into responses. Backends, state and metrics are handed in, so tests and
benchmarks can assemble a gateway from real parts of their choosing. What an
answer costs is counted by :mod:`~hybridgate.serving.accounting`, what it is
recorded as lives in :mod:`~hybridgate.serving.records`, the labels it may give
in :mod:`~hybridgate.serving.labels`, and the router's upkeep while serving in
:mod:`~hybridgate.serving.router_upkeep`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from hybridgate.classifiers.node_weights import NodeWeights
from hybridgate.router import (
    Decision,
    EmbeddingScorer,
    Mode,
    PersonalDataDetector,
    PrivacyViolation,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
)
from hybridgate.router.node_choice import score_nodes
from hybridgate.serving.accounting import DEFAULT_CLOUD_ANSWER_TOKENS, Accounting, worst_usage
from hybridgate.serving.backends.base import (
    Backend,
    BackendError,
    ChatParams,
    Completion,
    Delta,
    QueueFull,
    UpstreamRejected,
    Usage,
)
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.cloud_request import cloud_strings, is_small, request_params
from hybridgate.serving.collab import Collaborator, CollabReport, merged_report
from hybridgate.serving.config import GatewayConfig, RemoteConfig
from hybridgate.serving.cpu import cpu_executor
from hybridgate.serving.energy import EnergyRate, add_energy
from hybridgate.serving.labels import JUDGE_PROMPT, Labels
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.node_health import HealthMonitor, LatencyTracker, ProbeTarget
from hybridgate.serving.node_share import NodeShare
from hybridgate.serving.node_stats import NodeStats
from hybridgate.serving.records import Answer, RequestHints, Routing, StreamAnswer, query_text
from hybridgate.serving.router_adapt import RouterAdapter
from hybridgate.serving.router_reload import RouterWatcher
from hybridgate.serving.router_upkeep import RouterUpkeep
from hybridgate.serving.schemas import ChatCompletionRequest
from hybridgate.serving.state import StateStore
from hybridgate.serving.state.base import key_id

__all__ = [
    "ALIASES", "DEFAULT_CLOUD_ANSWER_TOKENS", "JUDGE_PROMPT", "Answer", "Gateway", "RequestHints", "Routing", "StreamAnswer",
    "worst_usage",
]

log = logging.getLogger(__name__)

ALIASES = ("hybridgate/auto", "hybridgate/local", "hybridgate/cloud", *(f"hybridgate/{m.value}" for m in Mode))


def _relevance_of(policy: RoutingPolicy) -> Any:
    """The condense mode ranks passages with the router's own embedder when it has one."""
    scorer = policy.scorer
    if not isinstance(scorer, EmbeddingScorer):
        from hybridgate.serving.condense import word_overlap

        return word_overlap
    embedder = scorer.embedder  # a reload keeps the embedder: the router's folder must match it

    def by_embedding(question: str, chunks: Any) -> Any:
        vecs = embedder.encode([question, *chunks])
        return vecs[1:] @ vecs[0]

    return by_embedding


class Gateway:
    """The request path; it holds the parts each step uses and hands the rest to its helpers."""

    def __init__(
        self,
        cfg: GatewayConfig,
        local: LlamaBackend,
        remotes: list[Backend],
        state: StateStore,
        metrics: Metrics,
        policy: RoutingPolicy,
        *,
        owns_local: bool = True,
    ) -> None:
        self.cfg = cfg
        self._owns_local = owns_local
        self.local = local
        self.backends: dict[str, Backend] = {local.name: local, **{b.name: b for b in remotes}}
        self._remote_cfg: dict[str, RemoteConfig] = {c.name: c for c in [*cfg.edge_nodes, *([cfg.cloud] if cfg.cloud else [])]}
        self.state = state
        self.metrics = metrics
        self.policy = policy
        self.fallback_to_local = bool(cfg.cloud and cfg.cloud.fallback_to_local)
        self.detector = PersonalDataDetector(cfg.privacy.names, spelled=cfg.privacy.detects_spelled_out)
        self.latency = LatencyTracker(cfg.health.latency_alpha)
        self.energy_rate = EnergyRate(cfg.energy.local_joules_per_output_token, cfg.energy.local_joules_per_input_token)
        self.nodes = self._node_stats()
        self.monitor = HealthMonitor(self._probe_targets(), cfg.health.interval_s, cfg.health.timeout_s, self.nodes)
        self.node_share = NodeShare(self.nodes, state, cfg.state.node_share_s)  # with Redis: the fleet's view of each node
        self.collab = Collaborator(local, cfg.collaboration, self.detector, _relevance_of(policy))
        self.loop: asyncio.AbstractEventLoop | None = None  # the event loop it serves on, once started
        # The CPU work of deciding (rendering, tokenising, scanning, embedding) in one thread of its own: with a
        # thread per request, five hostile requests competed with the event loop for the interpreter lock and
        # /healthz waited over 100 ms; queued behind one thread, the loop waits a switch interval at most.
        self._cpu = cpu_executor()  # shared with the local model's preparing (serving/cpu.py)
        self.accounting = Accounting(cfg, state, metrics, local, self.backends, self._remote_cfg, self.energy_rate, cfg.collaboration)
        self.labels = Labels(cfg, state, metrics, policy, local, self.backends, self._remote_cfg, self.detector, self.accounting, self._cpu)
        self.upkeep = RouterUpkeep(cfg, policy, state, self.nodes)
        # Per-request work done once: the route of each backend, the models that pin the cloud, settings read on
        # every decision, and the metric children every answer updates.
        self._routes: dict[str, Route] = {name: b.route for name, b in self.backends.items()}
        self._cloud_pins = frozenset(
            ["hybridgate/cloud", *(name for name, route in self._routes.items() if route is Route.CLOUD)]
        )
        self._overflow_to_cloud = cfg.local.context_overflow == "cloud"
        self._weighted = cfg.nodes.choice == "weighted"
        self._decision_seconds = metrics.decision

    @property
    def watcher(self) -> RouterWatcher | None:
        return self.upkeep.watcher

    @property
    def adapter(self) -> RouterAdapter | None:
        return self.upkeep.adapter

    def _node_stats(self) -> NodeStats:
        n = self.cfg.nodes
        stats = NodeStats(
            default_tokens_per_s=n.default_tokens_per_s,
            weights=NodeWeights(n.weights.intercept_ms, n.weights.cpu, n.weights.ai, n.weights.nl),
            learn=n.learn,
            forget=n.forget,
            prior_strength=n.prior_strength,
        )
        stats.add(self.local.name, queue=self.local)  # in process: its queue is its load, no network between
        for name in self.backends:
            rc = self._remote_cfg.get(name)
            if rc is not None:
                stats.add(name, tokens_per_s=rc.tokens_per_s, accelerator=rc.accelerator)
        return stats

    def _probe_targets(self) -> list[ProbeTarget]:
        from hybridgate.serving.backends.providers import auth_header
        from hybridgate.serving.backends.remote_common import api_key

        out = []
        for name, rc in self._remote_cfg.items():
            if rc.api_base and name in self.backends:
                out.append(
                    ProbeTarget(
                        name, rc.api_base, self.backends[name].health, api_key(rc), tuple(rc.load_metrics), rc.load_url,
                        auth_header(rc.model),
                    )
                )
        return out

    def _local_overloaded(self) -> bool:
        """Queue full, or (with ``local.max_wait_s``) slower to start than the user allows."""
        wait = self.cfg.local.max_wait_s
        return self.local.queue_depth >= 1 + self.local.max_queue or (wait is not None and self.local.expected_wait_s > wait)

    def offer_node_weights(self, published: Any) -> bool:
        """Node weights a federation published with the router (see :meth:`RouterUpkeep.offer_node_weights`)."""
        return self.upkeep.offer_node_weights(published)

    def router_info(self) -> dict[str, Any]:
        return self.upkeep.info()

    def start(self) -> None:
        """Start background work (node health probes, the router watch); called once the event loop runs."""
        self.loop = asyncio.get_running_loop()
        self.monitor.start()
        self.node_share.start()
        self.upkeep.start()

    # -- deciding -----------------------------------------------------------------------------------
    def known_model(self, model: str) -> bool:
        return model in self.backends or model in ALIASES

    def _lean(self, model: str, api_key: str | None, energy_cap: float | None) -> bool:
        """Whether a request may skip the local model's token count: it pins the cloud (no scorer, no context
        overflow reads the count) and no budget of its key sets anything aside by it. Such a request, if small, is
        decided on the event loop (:func:`~hybridgate.serving.cloud_request.is_small`)."""
        if model not in self._cloud_pins:
            return False
        key = api_key or ""
        budgets = self.cfg.budgets
        return energy_cap is None and budgets.limit_for(key) is None and budgets.energy_limit_for(key) is None

    def _context(self, req: ChatCompletionRequest, budget_spent: bool, energy_spent: bool, energy_cap: float | None) -> RouteContext:
        return RouteContext(
            backends=self._routes,
            healthy=frozenset(name for name, b in self.backends.items() if b.health.healthy),
            local_context_tokens=self.local.n_ctx - (req.answer_limit or self.local.default_max_tokens),
            overflow_to_cloud=self._overflow_to_cloud,
            cloud_budget_exhausted=budget_spent,
            latency_ms=self.latency.snapshot(),
            overloaded=frozenset({self.local.name}) if self._local_overloaded() else frozenset(),
            energy_budget_exhausted=energy_spent,
            energy_cap_j=energy_cap,
            node_scores=(
                score_nodes(self.nodes.all_features(), self.nodes.weights, req.answer_limit or self.cfg.nodes.expected_tokens)
                if self._weighted
                else {}
            ),
        )

    async def decide(
        self,
        req: ChatCompletionRequest,
        messages: list[dict[str, Any]],
        api_key: str | None,
        hints: RequestHints = RequestHints(),
        params: ChatParams | None = None,
        *,
        count: bool = False,
    ) -> tuple[Decision, float, int | None]:
        """The decision, the milliseconds it took, and the prompt's token count (kept for usage estimates).

        ``params``: the request as the backends will get it, where the caller built it already (its strings are
        what the privacy scan reads); otherwise built here. The count is None when nothing needed it (a request
        pinned to the cloud with no budget to set aside) unless ``count`` asks for it (the dry run)."""
        budget_spent, energy_spent = await self.accounting.budgets_spent(api_key)
        energy_cap = self.cfg.budgets.energy_cap_for(api_key or "")
        t0 = time.perf_counter()
        params = params or request_params(req, messages=messages)
        ctx = self._context(req, budget_spent, energy_spent, energy_cap)
        if not count and self._lean(req.model, api_key, energy_cap) and is_small(params):
            # No embedding, no tokenising, a scan of a few kilobytes: cheaper here than a hop to a thread and back.
            decision = self.policy.decide(self._query(req, messages, hints, params, count=False), ctx)
            prompt_tokens: int | None = None
        else:
            # Rendering and tokenising the conversation, scanning it for personal data and embedding it grow with
            # the request: off the event loop, in one hop, so other requests keep streaming.
            loop = asyncio.get_running_loop()
            decision, prompt_tokens = await loop.run_in_executor(self._cpu, self._decide_off_loop, req, messages, hints, params, ctx)
        if decision.score is not None:
            self.upkeep.scored()
        ms = (time.perf_counter() - t0) * 1000
        self._decision_seconds.observe(ms / 1000)
        return decision, ms, prompt_tokens

    def _decide_off_loop(
        self, req: ChatCompletionRequest, messages: list[dict[str, Any]], hints: RequestHints, params: ChatParams, ctx: RouteContext
    ) -> tuple[Decision, int]:
        query = self._query(req, messages, hints, params)
        if ctx.energy_cap_j is not None:
            ctx = replace(ctx, expected_joules=self.accounting.expected_joules(query.prompt_tokens, req.answer_limit, req.n or 1))
        return self.policy.decide(query, ctx), query.prompt_tokens

    def _query(
        self,
        req: ChatCompletionRequest,
        messages: list[dict[str, Any]],
        hints: RequestHints,
        params: ChatParams | None = None,
        *,
        count: bool = True,
    ) -> RouteQuery:
        return RouteQuery(
            text=query_text(messages),
            # The local model's count (a chat template and a tokeniser): read by the scorer, the context overflow
            # and the budgets; a request pinned to the cloud with no budget reads none of them.
            prompt_tokens=self.local.count_prompt_tokens(messages) if count else 0,
            n_messages=len(messages),
            requested_model=req.model,
            # Every string a cloud call would carry, not the content only: the same list the redact mode rewrites.
            personal_data=self.detector.kinds(cloud_strings(params or request_params(req, messages=messages))),
            privacy_strict=hints.privacy_strict,
            deadline_ms=hints.deadline_ms,
            needs_tools=req.uses_tools,
        )

    async def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The local model's count of a prompt, off the event loop (for a request whose decision did not count)."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, self.local.count_prompt_tokens, messages)

    def _fallback_target(self, routing: Routing, failed: Backend, exc: Exception) -> Backend | None:
        """Another node of the same route first (failover), then the local model for a failed cloud call."""
        if isinstance(exc, UpstreamRejected) or not isinstance(exc, BackendError | QueueFull):
            return None
        for name in routing.decision.fallbacks:
            b = self.backends.get(name)
            if b is None or (b.route is Route.CLOUD and routing.decision.cloud_forbidden):
                continue
            if b is not failed and name not in routing.tried and b.health.healthy:
                return b
        if isinstance(exc, BackendError) and failed.route is Route.CLOUD and self.fallback_to_local and self.local.health.healthy:
            return self.local if self.local.name not in routing.tried else None
        return None

    def _routing(self, decision: Decision, ms: float) -> Routing:
        assert decision.backend is not None
        backend = self.backends[decision.backend]
        # Defence in depth: the policy keeps privacy as an invariant, and the gateway refuses to act against it.
        if backend.route is Route.CLOUD and decision.cloud_forbidden:
            raise PrivacyViolation("this request's privacy forbids the cloud")
        collab = decision.route is Route.COLLAB
        return Routing(
            request_id=f"chatcmpl-hg-{os.urandom(12).hex()}",  # uuid4's randomness without building a UUID
            decision=decision,
            decision_ms=ms,
            backend=backend.name,
            route=Route.COLLAB if collab else backend.route,
            collab=CollabReport(decision.mode) if collab and decision.mode else None,
        )

    def _fallback_or_raise(self, routing: Routing, failed: Backend, exc: Exception) -> Backend:
        """The backend to try instead of ``failed`` (the routing notes the switch), or ``exc`` raised again."""
        routing.tried.add(failed.name)
        target = self._fallback_target(routing, failed, exc)
        if target is None:
            self.metrics.requests.labels(routing.route.value, routing.backend, "error").inc()
            raise exc
        self._fell_back(routing, target, exc)
        return target

    def _fell_back(self, routing: Routing, to: Backend, exc: Exception) -> None:
        log.warning("%s failed (%s); falling back to %s", routing.backend, exc, to.name)
        self.metrics.fallbacks.labels(routing.backend, to.name).inc()
        self.metrics.requests.labels(routing.route.value, routing.backend, "error").inc()
        routing.fallback_from, routing.fallback_reason = routing.backend, str(exc)[:200]
        routing.backend, routing.route = to.name, to.route

    # -- answering ----------------------------------------------------------------------------------
    async def _collab_plan(self, routing: Routing, params: ChatParams) -> tuple[Any, Backend]:
        d = routing.decision
        assert d.mode is not None and d.cloud_backend is not None
        plan = await self.collab.plan(d.mode, params)
        routing.collab = plan.report
        return plan, self.backends[d.cloud_backend]

    async def chat(
        self, req: ChatCompletionRequest, params: ChatParams, decision: Decision, ms: float, api_key: str | None,
        prompt_tokens: int | None = 0,
    ) -> Answer:
        """``prompt_tokens`` None: not counted, which :meth:`decide` allows only where no budget reads it."""
        routing = self._routing(decision, ms)
        routing.user = params.user[:128] if params.user else None
        await self.accounting.reserve(routing, params, prompt_tokens or 0, api_key)
        try:
            return await self._chat(routing, req, params, api_key)
        finally:
            await self.accounting.release(routing, api_key)

    async def _chat(self, routing: Routing, req: ChatCompletionRequest, params: ChatParams, api_key: str | None) -> Answer:
        if routing.route is Route.COLLAB:
            started = time.perf_counter()
            choices, reports = [], []
            for _ in range(params.n):  # each choice runs the whole mode; the report adds their usage up
                plan, cloud = await self._collab_plan(routing, replace(params, n=1))
                choices.append(await self.collab.complete(plan, cloud, replace(params, n=1)))
                reports.append(plan.report)
                if plan.answer is not None and plan.answer.energy is not None:
                    routing.energy_local = add_energy(routing.energy_local, plan.answer.energy)
            completion = choices[0]
            if len(choices) > 1:
                routing.collab = merged_report(reports)
                completion = replace(completion, usage=routing.collab.total, alternatives=tuple(choices[1:]))
            await self.accounting.account(routing, completion.usage, api_key, time.perf_counter() - started, status="ok")
            await self.labels.hold_for_feedback(routing, params.messages, api_key)
            return Answer(completion, routing)  # collaborative answers label themselves (cascade)
        # Only a plain single answer is cached (tool calls, several choices and log-probabilities are not).
        cacheable = self.cfg.state.cache_enabled and not params.uses_tools and params.n == 1 and not params.logprobs
        cache_key = None
        if cacheable and is_small(params):
            cache_key = self._cache_key(req, params, api_key, routing.decision)
        elif cacheable:  # hashing a request of megabytes is CPU work: off the event loop
            cache_key = await asyncio.get_running_loop().run_in_executor(self._cpu, self._cache_key, req, params, api_key, routing.decision)
        if cache_key:
            hit = await self.state.cache_get(cache_key)
            # Fail closed: whatever the key says, a request the cloud may not see is never served a cloud answer.
            if hit is not None and Route(hit["route"]) is not Route.LOCAL and routing.decision.cloud_forbidden:
                hit = None
            if hit is not None:
                self.metrics.cache_hits.inc()
                routing.cache = "hit"
                completion = Completion(hit["text"], hit["finish_reason"], Usage(*hit["usage"]), hit["model"])
                routing.backend, routing.route = hit["backend"], Route(hit["route"])
                await self.accounting.account(routing, Usage(0, 0), api_key, 0.0, status="ok")
                return Answer(completion, routing)
        started = time.perf_counter()
        backend = self.backends[routing.backend]
        while True:
            t0 = time.perf_counter()
            ticket = self.nodes.begin(backend.name)
            try:
                completion = await backend.complete(params)
                break
            except Exception as exc:
                self.nodes.abandon(ticket)
                backend = self._fallback_or_raise(routing, backend, exc)
        self.nodes.finish(ticket, completion.usage.completion_tokens)
        self.latency.observe(backend.name, time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        routing.energy_local = completion.energy
        await self.accounting.account(routing, completion.usage, api_key, elapsed, status="ok")
        await self.labels.hold_for_feedback(routing, params.messages, api_key, completion.text)
        if cache_key:
            routing.cache = "miss"
            await self.state.cache_set(
                cache_key,
                {
                    "text": completion.text,
                    "finish_reason": completion.finish_reason,
                    "usage": [completion.usage.prompt_tokens, completion.usage.completion_tokens],
                    "model": completion.model,
                    "backend": routing.backend,
                    "route": routing.route.value,
                },
                self.cfg.state.cache_ttl_s,
            )
        return Answer(completion, routing)

    async def stream(
        self, params: ChatParams, decision: Decision, ms: float, api_key: str | None = None, prompt_tokens: int | None = 0
    ) -> StreamAnswer:
        routing = self._routing(decision, ms)
        routing.user = params.user[:128] if params.user else None
        await self.accounting.reserve(routing, params, prompt_tokens or 0, api_key)
        try:
            return await self._stream(routing, params)
        except BaseException:
            await self.accounting.release(routing, api_key)  # once a stream has started, finish_stream accounts and releases
            raise

    async def _stream(self, routing: Routing, params: ChatParams) -> StreamAnswer:
        if routing.route is Route.COLLAB:
            started = time.perf_counter()
            plan, cloud = await self._collab_plan(routing, params)
            gen = self.collab.stream(plan, cloud, params)
            first = await anext(gen)
            self.metrics.child(self.metrics.first_token, routing.route.value, routing.backend).observe(time.perf_counter() - started)
            return StreamAnswer(routing, first, gen, started, params.messages)
        backend = self.backends[routing.backend]
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            routing.ticket = self.nodes.begin(backend.name)
            it: AsyncGenerator[Delta, None] = backend.stream(params)  # type: ignore[assignment]
            try:
                first = await it.__anext__()
                break
            except Exception as exc:
                self.nodes.abandon(routing.ticket)
                backend = self._fallback_or_raise(routing, backend, exc)
        self.latency.observe(backend.name, time.perf_counter() - t0)
        self.metrics.child(self.metrics.first_token, routing.route.value, routing.backend).observe(time.perf_counter() - started)
        return StreamAnswer(routing, first, it, started, params.messages)

    async def finish_stream(self, answer: StreamAnswer, usage: Usage, api_key: str | None, status: str) -> None:
        answer.routing.usage = usage
        if status == "ok":
            self.nodes.finish(answer.routing.ticket, usage.completion_tokens)
        else:
            self.nodes.abandon(answer.routing.ticket)
        await self.accounting.account(answer.routing, usage, api_key, time.perf_counter() - answer.started, status=status)
        await self.accounting.release(answer.routing, api_key)  # the energy set aside (the dollars went back with the account)
        if status == "ok":
            await self.labels.hold_for_feedback(answer.routing, answer.messages, api_key)

    # -- bookkeeping --------------------------------------------------------------------------------
    def _cache_key(self, req: ChatCompletionRequest, params: ChatParams, api_key: str | None, decision: Decision) -> str:
        """Keyed by tenant (a key never sees another key's answers, nor learns what it asked), by the request's
        privacy (a strict request and a default one are different questions: only one may have gone to the cloud)
        and by everything that changes the answer."""
        privacy = "private" if decision.private else "redact" if decision.redact_only else "default"
        blob = json.dumps(
            [
                key_id(api_key), privacy, req.model, params.messages, params.max_tokens, params.temperature, params.top_p, params.stop,
                params.seed, params.presence_penalty, params.frequency_penalty, params.response_format, params.tools,
                params.tool_choice,
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    async def feedback(self, request_id: str, rating: float, api_key: str | None) -> dict[str, Any] | None:
        """A user's rating of one answer (see :meth:`Labels.feedback`); None when the id is unknown or not this key's."""
        return await self.labels.feedback(request_id, rating, api_key)

    def describe(self) -> dict[str, Any]:
        return {name: b.describe() for name, b in self.backends.items()}

    def describe_nodes(self) -> dict[str, Any]:
        """The node choice's state: the weights in use, how many answers taught them, and each node's features."""
        return {"choice": self.cfg.nodes.choice, **self.nodes.describe()}

    async def drain(self) -> None:
        """Wait until the work answers left behind (shadow comparisons) is done: what the cloud was sent is then
        all sent, which a test can check without guessing how long to sleep."""
        await self.labels.drain()

    async def aclose(self) -> None:
        self.labels.cancel()
        await self.monitor.aclose()
        await self.node_share.aclose()
        await self.upkeep.aclose()
        for b in self.backends.values():
            if b is not self.local or self._owns_local:
                await b.aclose()
        await self.state.aclose()
