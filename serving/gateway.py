"""One request's path: describe it, let the router decide, call one backend, fall back, account.

This module knows nothing of HTTP; :mod:`hybridgate.serving.app` turns what it
returns into responses. Backends, state and metrics are handed in, so tests and
benchmarks can assemble a gateway from real parts of their choosing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybridgate.classifiers.node_weights import NodeWeights, NodeWeightsError
from hybridgate.router import (
    BudgetExhausted,
    Decision,
    EnergyBudgetExhausted,
    Mode,
    PersonalDataDetector,
    PrivacyViolation,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
)
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.router.node_choice import score_nodes
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
from hybridgate.serving.backends.pricing import cost_usd
from hybridgate.serving.cloud_request import cloud_strings, request_params
from hybridgate.serving.collab import Collaborator, CollabReport, merged_report
from hybridgate.serving.config import GatewayConfig, RemoteConfig
from hybridgate.serving.cpu import cpu_executor
from hybridgate.serving.energy import Energy, EnergyRate, add_energy, cloud_energy
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.node_health import HealthMonitor, LatencyTracker, ProbeTarget
from hybridgate.serving.node_share import NodeShare
from hybridgate.serving.node_stats import NodeStats, Ticket
from hybridgate.serving.router_adapt import RouterAdapter, label_inputs
from hybridgate.serving.router_reload import RouterWatcher, thresholds_for
from hybridgate.serving.schemas import ChatCompletionRequest
from hybridgate.serving.state import StateStore
from hybridgate.serving.state.base import key_id

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Two answers to the same question follow. Reply with the single letter of the better answer, A or B.\n\n"
    "Question:\n{q}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nBetter answer (A or B):"
)
ALIASES = ("hybridgate/auto", "hybridgate/local", "hybridgate/cloud", *(f"hybridgate/{m.value}" for m in Mode))

_SCORED_CHARS = 4000


@dataclass
class Routing:
    """How one answer was produced; it travels in headers and under the ``hybridgate`` key."""

    request_id: str
    decision: Decision
    decision_ms: float
    backend: str
    route: Route
    fallback_from: str | None = None
    fallback_reason: str | None = None
    cache: str | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    tried: set[str] = field(default_factory=set)
    collab: CollabReport | None = None
    reserved_usd: float = 0.0  # set aside against the key's budget before a cloud call, released once it is accounted
    reserved_joules: float = 0.0  # set aside against the key's daily energy budget, released once the answer is accounted
    energy_local: Energy | None = None  # what the local model's generation took, as its backend measured it
    energy: dict[str, dict[str, Any]] = field(default_factory=dict)  # per side (local, cloud), set when accounted
    ticket: Ticket | None = None  # a streamed answer's node measurement, finished with the stream
    user: str | None = None  # the request's ``user`` (the client's end-user id), for the operator's decision log

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.request_id,
            "route": self.route.value,
            "backend": self.backend,
            "decision_ms": round(self.decision_ms, 3),
            "decided": self.decision.as_dict(),
            "cost_usd": round(self.cost_usd, 8),
        }
        if self.fallback_from:
            out["fallback"] = {"from": self.fallback_from, "reason": self.fallback_reason}
        if self.collab is not None:
            out["collaboration"] = self.collab.as_dict()
        if self.cache:
            out["cache"] = self.cache
        if self.energy:
            out["energy"] = self.energy
        return out

    def headers(self) -> dict[str, str]:
        score = self.decision.score
        h = {
            "x-hybridgate-route": self.route.value,
            "x-hybridgate-backend": self.backend,
            "x-hybridgate-score": "-" if score is None else f"{score:.4f}",
            "x-hybridgate-router": self.decision.router
            + (f"@{self.decision.router_version}" if self.decision.router_version else ""),
            "x-hybridgate-decision-ms": f"{self.decision_ms:.3f}",
            "x-hybridgate-request-id": self.request_id,
        }
        if self.decision.threshold is not None:
            h["x-hybridgate-threshold"] = f"{self.decision.threshold:.4f}"
        if self.decision.signals:
            # Signal names are fixed identifiers from the router, never text from the request.
            h["x-hybridgate-signals"] = ",".join(f"{sig.name.replace(',', ' ')}={sig.push:+.3f}" for sig in self.decision.signals)
        if self.decision.mode is not None:
            h["x-hybridgate-mode"] = self.decision.mode.value
        if self.fallback_from:
            h["x-hybridgate-fallback"] = self.fallback_from
        if self.cache:
            h["x-hybridgate-cache"] = self.cache
        return h


@dataclass
class Answer:
    completion: Completion
    routing: Routing


@dataclass
class StreamAnswer:
    """A stream whose first piece has already arrived, so the route (and any fallback) is settled."""

    routing: Routing
    first: Delta
    rest: AsyncGenerator[Delta, None]
    started: float = field(default_factory=time.perf_counter)
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RequestHints:
    """What a client may say about one request beyond the OpenAI body (``x-hybridgate-*`` headers)."""

    privacy_strict: bool = False
    deadline_ms: float | None = None


def _relevance_of(policy: RoutingPolicy) -> Any:
    """The condense mode ranks passages with the router's own embedder when it has one."""
    embedder = getattr(policy.scorer, "embedder", None)
    if embedder is None:
        from hybridgate.serving.condense import word_overlap

        return word_overlap

    def by_embedding(question: str, chunks: Any) -> Any:
        vecs = embedder.encode([question, *chunks])
        return vecs[1:] @ vecs[0]

    return by_embedding


def _query_text(messages: list[dict[str, Any]]) -> str:
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    rest = "\n".join(m["content"] for m in messages if m["content"] is not last_user)
    return (last_user + "\n" + rest)[:_SCORED_CHARS]


# What a cloud answer without max_tokens is assumed to cost at most, for setting budget aside before the call.
DEFAULT_CLOUD_ANSWER_TOKENS = 1024


def worst_usage(prompt_tokens: int, max_tokens: int, choices: int, route: Route) -> Usage:
    """The most a cloud call can bill: every choice's whole answer (``n`` x ``max_tokens``), and the prompt once,
    or once per choice in a collaborative mode (which runs the whole mode per choice)."""
    return Usage(prompt_tokens * (choices if route is Route.COLLAB else 1), max_tokens * choices)


def _base_score(scorer: object, vector: np.ndarray, text: str, turns: int) -> float | None:
    """The shipped router's score for the query (its ``vector`` already embedded), without this gateway's adapter:
    what an adapter trains on top of."""
    if not isinstance(scorer, ClassifierScorer):
        return None
    return round(float(scorer.model.score(vector[None, :], [text], [turns])[0]), 6)


class Gateway:
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
        self._scored = 0
        self._calibrating: asyncio.Task[None] | None = None
        self._shadows: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the event loop it serves on, once started
        # The CPU work of deciding (rendering, tokenising, scanning, embedding) in one thread of its own: with a
        # thread per request, five hostile requests competed with the event loop for the interpreter lock and
        # /healthz waited over 100 ms; queued behind one thread, the loop waits a switch interval at most.
        self._cpu = cpu_executor()  # shared with the local model's preparing (serving/cpu.py)
        self.watcher: RouterWatcher | None = None
        if cfg.router.watch_s > 0 and isinstance(policy.scorer, ClassifierScorer):
            from hybridgate.classifiers.artifact import resolve_router

            self.watcher = RouterWatcher(resolve_router(cfg.router.path), policy, state, cfg.router.watch_s, on_loaded=self._router_loaded)
        self.adapter: RouterAdapter | None = None
        if cfg.router.adapt_s > 0 and cfg.state.labels and isinstance(policy.scorer, ClassifierScorer):
            self.adapter = RouterAdapter(policy.scorer, state, cfg.router.adapt_s, cfg.router.adapt_min_labels)

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
        from hybridgate.serving.backends.remote_common import api_key

        out = []
        for name, rc in self._remote_cfg.items():
            if rc.api_base and name in self.backends:
                out.append(
                    ProbeTarget(name, rc.api_base, self.backends[name].health, api_key(rc), tuple(rc.load_metrics), rc.load_url)
                )
        return out

    def _local_overloaded(self) -> bool:
        """Queue full, or (with ``local.max_wait_s``) slower to start than the user allows."""
        wait = self.cfg.local.max_wait_s
        return self.local.queue_depth >= 1 + self.local.max_queue or (wait is not None and self.local.expected_wait_s > wait)

    async def _recalibrate(self) -> None:
        """Thresholds from the quantiles of recent scores: keeps the cloud share on target as traffic drifts."""
        rc = self.cfg.router
        assert rc.cloud_share is not None
        recent = await self.state.recent_decisions(rc.recalibrate_window)
        scores = [d["decided"]["score"] for d in recent if (d.get("decided") or {}).get("score") is not None]
        if len(scores) < 50:
            return
        q = np.quantile(np.asarray(scores, dtype=np.float64), [1.0 - rc.cloud_share, max(0.0, 1.0 - rc.cloud_share - rc.gray_share)])
        self.policy.threshold = round(float(q[0]), 6)
        self.policy.t_local = round(float(q[1]), 6) if rc.gray_share else None
        log.info("recalibrated on %d recent scores: t_cloud %.4f, t_local %s", len(scores), q[0], self.policy.t_local)

    def _router_loaded(self, model: Any) -> None:
        """A newly loaded router brings its own score scale: thresholds follow unless the config fixes them,
        and an adapter fitted on the old router's scores no longer applies."""
        self.policy.threshold, self.policy.t_local = thresholds_for(model, self.cfg.router)
        if self.adapter is not None:
            self.adapter.reset()
        self.offer_node_weights((getattr(model, "meta", None) or {}).get("node_weights"))

    def offer_node_weights(self, published: Any) -> bool:
        """Node weights a federation published with the router: taken if they predict this gateway's recent answers
        at least as well as its own (or it has too few to judge), otherwise its own are kept; the log says which."""
        if not published:
            return False
        try:
            fleet = NodeWeights.from_array([published[k] for k in ("intercept_ms", "cpu", "ai", "nl")])
        except (NodeWeightsError, KeyError, TypeError, ValueError) as exc:
            log.warning("the router's node weights are not usable (%s); keeping this gateway's", exc)
            return False
        offer = self.nodes.regression.offer(fleet)
        log.info(
            "fleet node weights %s: %s (mean error on %d recent answers: fleet %s ms, own %s ms)",
            fleet.as_dict(), "taken" if offer.taken else "kept this gateway's", offer.answers,
            "-" if offer.offered_error is None else f"{offer.offered_error:.0f}", "-" if offer.own_error is None else f"{offer.own_error:.0f}",
        )
        return offer.taken

    def router_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.policy.scorer.name, "version": getattr(self.policy.scorer, "version", None)}
        info["threshold"], info["t_local"] = self.policy.threshold, self.policy.t_local
        if self.watcher is not None:
            info["previous"] = None if self.watcher.previous is None else self.watcher.previous.version
            info["reloads"] = self.watcher.history[-5:]
        if self.adapter is not None:
            info["adapter"] = None if self.adapter.last is None else self.adapter.last.as_dict()
            info["adapted"] = getattr(self.policy.scorer, "adapter", None) is not None
        return info

    def start(self) -> None:
        """Start background work (node health probes, the router watch); called once the event loop runs."""
        self.loop = asyncio.get_running_loop()
        self.monitor.start()
        self.node_share.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.adapter is not None:
            self.adapter.start()

    # -- deciding -----------------------------------------------------------------------------------
    def known_model(self, model: str) -> bool:
        return model in self.backends or model in ALIASES

    async def _budgets_spent(self, api_key: str | None) -> tuple[bool, bool]:
        """(the key's daily cloud budget is spent, its daily energy budget is spent), from one read of its usage."""
        budgets, key = self.cfg.budgets, api_key or ""
        usd, joules = budgets.limit_for(key), budgets.energy_limit_for(key)
        if usd is None and joules is None:
            return False, False
        used = await self.state.usage_today(key_id(api_key))
        return usd is not None and used.cloud_cost_usd >= usd, joules is not None and used.energy_joules >= joules

    def _expected_joules(self, prompt_tokens: int, answer_tokens: int | None, choices: int = 1) -> dict[Route, float]:
        """This request's energy on each route, before it runs: the local model at its measured joules per token,
        the cloud at its configured ones, for every one of its ``n`` choices (the local model reads the prompt once
        per choice, the cloud once). An answer without max_tokens counts local.default_max_tokens."""
        n = (answer_tokens or self.local.default_max_tokens) * choices
        return {
            Route.LOCAL: self.energy_rate.expected(prompt_tokens * choices, n),
            Route.CLOUD: self._cloud_energy(prompt_tokens, n).joules,
        }

    def _cloud_energy(self, prompt_tokens: int, completion_tokens: int) -> Energy:
        e = self.cfg.energy
        return cloud_energy(prompt_tokens, completion_tokens, e.cloud_joules_per_output_token, e.cloud_joules_per_input_token)

    async def decide(
        self,
        req: ChatCompletionRequest,
        messages: list[dict[str, Any]],
        api_key: str | None,
        hints: RequestHints = RequestHints(),
        params: ChatParams | None = None,
    ) -> tuple[Decision, float, int]:
        """The decision, the milliseconds it took, and the prompt's token count (kept for usage estimates).

        ``params``: the request as the backends will get it, where the caller built it already (its strings are
        what the privacy scan reads); otherwise built here."""
        budget_spent, energy_spent = await self._budgets_spent(api_key)
        energy_cap = self.cfg.budgets.energy_cap_for(api_key or "")
        t0 = time.perf_counter()
        # Rendering and tokenising the conversation and scanning it for personal data grow with the request:
        # off the event loop, like the classifier below.
        loop = asyncio.get_running_loop()
        query = await loop.run_in_executor(self._cpu, self._query, req, messages, hints, params)
        ctx = RouteContext(
            backends={name: b.route for name, b in self.backends.items()},
            healthy=frozenset(name for name, b in self.backends.items() if b.health.healthy),
            local_context_tokens=self.local.n_ctx - (req.answer_limit or self.local.default_max_tokens),
            overflow_to_cloud=self.cfg.local.context_overflow == "cloud",
            cloud_budget_exhausted=budget_spent,
            latency_ms=self.latency.snapshot(),
            overloaded=frozenset({self.local.name}) if self._local_overloaded() else frozenset(),
            energy_budget_exhausted=energy_spent,
            energy_cap_j=energy_cap,
            expected_joules=self._expected_joules(query.prompt_tokens, req.answer_limit, req.n or 1) if energy_cap is not None else {},
            node_scores=(
                score_nodes(self.nodes.all_features(), self.nodes.weights, req.answer_limit or self.cfg.nodes.expected_tokens)
                if self.cfg.nodes.choice == "weighted"
                else {}
            ),
        )
        # A classifier embeds the query: run it off the event loop so other requests keep streaming.
        decision = await loop.run_in_executor(self._cpu, self.policy.decide, query, ctx)
        if decision.score is not None and self.cfg.router.recalibrate_every:
            self._scored += 1
            if self._scored % self.cfg.router.recalibrate_every == 0 and (self._calibrating is None or self._calibrating.done()):
                self._calibrating = asyncio.get_running_loop().create_task(self._recalibrate())
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.decision.observe(ms / 1000)
        return decision, ms, query.prompt_tokens

    def _query(
        self, req: ChatCompletionRequest, messages: list[dict[str, Any]], hints: RequestHints, params: ChatParams | None = None
    ) -> RouteQuery:
        return RouteQuery(
            text=_query_text(messages),
            prompt_tokens=self.local.count_prompt_tokens(messages),
            n_messages=len(messages),
            requested_model=req.model,
            # Every string a cloud call would carry, not the content only: the same list the redact mode rewrites.
            personal_data=self.detector.kinds(cloud_strings(params or request_params(req, messages=messages))),
            privacy_strict=hints.privacy_strict,
            deadline_ms=hints.deadline_ms,
            needs_tools=req.uses_tools,
        )

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
            request_id=f"chatcmpl-hg-{uuid.uuid4().hex[:24]}",
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

    async def _reserve(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """Both budgets set aside, dollars first: a refused cloud reservation may move the answer to the local model,
        and the energy reserved is that of the route finally taken."""
        await self._reserve_usd(routing, params, prompt_tokens, api_key)
        try:
            await self._reserve_joules(routing, params, prompt_tokens, api_key)
        except BaseException:
            await self._release(routing, api_key)
            raise

    def _worst_joules(self, routing: Routing, params: ChatParams, prompt_tokens: int) -> float:
        """The most energy this answer can take on its route: every choice's whole answer and its prompt, on the
        local model at its measured rate, on the cloud at its configured one; a collaborative mode counts both
        (the local part bounded by the mode's own limit, its output read again by the cloud)."""
        n, route = params.n, routing.route
        if route is Route.COLLAB:
            c = self.collab.cfg
            limit = max(c.cascade_max_tokens, c.draft_max_tokens)
            local_answer = min(params.max_tokens or limit, limit)
        else:
            local_answer = params.max_tokens or self.local.default_max_tokens
        local = self.energy_rate.expected(prompt_tokens * n, local_answer * n)
        cloud_prompt = prompt_tokens + (local_answer if route is Route.COLLAB else 0)
        cloud = worst_usage(cloud_prompt, params.max_tokens or DEFAULT_CLOUD_ANSWER_TOKENS, n, route)
        cloud_j = self._cloud_energy(cloud.prompt_tokens, cloud.completion_tokens).joules
        return {Route.LOCAL: local, Route.CLOUD: cloud_j}.get(route, local + cloud_j)

    async def _reserve_joules(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """The daily energy budget, set aside like the cloud budget: checked before the request only, concurrent
        requests each saw room and together used more. Refused: 429 (energy_budget_exhausted), whatever the route."""
        limit = self.cfg.budgets.energy_limit_for(api_key or "")
        if limit is None:
            return
        worst = self._worst_joules(routing, params, prompt_tokens)
        if not await self.state.reserve(key_id(api_key), worst, limit, "joules"):
            raise EnergyBudgetExhausted("the daily energy budget of this key is spent (or set aside for requests in flight)")
        routing.reserved_joules = worst

    async def _reserve_usd(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """Set the most this answer's cloud call can cost aside against the key's daily budget, atomically, before
        making it: concurrent calls cannot together overspend (checking, then spending, let them). Refused: a
        pinned request gets 429; ``auto`` answers locally."""
        cloud_name = routing.decision.cloud_backend if routing.route is Route.COLLAB else routing.backend
        rcfg = self._remote_cfg.get(cloud_name or "")
        limit = self.cfg.budgets.limit_for(api_key or "")
        if limit is None or rcfg is None or self.backends[cloud_name].route is not Route.CLOUD:  # type: ignore[index]
            return
        worst = cost_usd(rcfg, worst_usage(prompt_tokens, params.max_tokens or DEFAULT_CLOUD_ANSWER_TOKENS, params.n, routing.route))
        if await self.state.reserve(key_id(api_key), worst, limit):
            routing.reserved_usd = worst
            return
        if routing.decision.pinned or not self.local.health.healthy:
            raise BudgetExhausted("the daily cloud budget of this key is spent (or set aside for calls in flight)")
        routing.fallback_from, routing.fallback_reason = routing.backend, "the daily cloud budget would be exceeded"
        routing.backend, routing.route, routing.collab = self.local.name, Route.LOCAL, None

    async def _release(self, routing: Routing, api_key: str | None) -> None:
        if routing.reserved_usd:
            reserved, routing.reserved_usd = routing.reserved_usd, 0.0
            await self.state.release(key_id(api_key), reserved)
        if routing.reserved_joules:  # after accounting: counted and still set aside for a moment, never neither
            joules, routing.reserved_joules = routing.reserved_joules, 0.0
            await self.state.release(key_id(api_key), joules, "joules")

    async def chat(
        self, req: ChatCompletionRequest, params: ChatParams, decision: Decision, ms: float, api_key: str | None, prompt_tokens: int = 0
    ) -> Answer:
        routing = self._routing(decision, ms)
        routing.user = params.user[:128] if params.user else None
        await self._reserve(routing, params, prompt_tokens, api_key)
        try:
            return await self._chat(routing, req, params, api_key)
        finally:
            await self._release(routing, api_key)

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
            await self._account(routing, completion.usage, api_key, time.perf_counter() - started, status="ok")
            await self._hold_for_feedback(routing, params.messages, api_key)
            return Answer(completion, routing)  # collaborative answers label themselves (cascade)
        # Only a plain single answer is cached (tool calls, several choices and log-probabilities are not).
        cacheable = self.cfg.state.cache_enabled and not params.uses_tools and params.n == 1 and not params.logprobs
        loop = asyncio.get_running_loop()  # hashing a request of megabytes is CPU work: off the event loop
        cache_key = await loop.run_in_executor(self._cpu, self._cache_key, req, params, api_key, routing.decision) if cacheable else None
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
                await self._account(routing, Usage(0, 0), api_key, 0.0, status="ok")
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
        await self._account(routing, completion.usage, api_key, elapsed, status="ok")
        await self._hold_for_feedback(routing, params.messages, api_key, completion.text)
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
        self, params: ChatParams, decision: Decision, ms: float, api_key: str | None = None, prompt_tokens: int = 0
    ) -> StreamAnswer:
        routing = self._routing(decision, ms)
        routing.user = params.user[:128] if params.user else None
        await self._reserve(routing, params, prompt_tokens, api_key)
        try:
            return await self._stream(routing, params)
        except BaseException:
            await self._release(routing, api_key)  # once a stream has started, finish_stream accounts and releases
            raise

    async def _stream(self, routing: Routing, params: ChatParams) -> StreamAnswer:
        if routing.route is Route.COLLAB:
            started = time.perf_counter()
            plan, cloud = await self._collab_plan(routing, params)
            gen = self.collab.stream(plan, cloud, params)
            first = await anext(gen)
            self.metrics.first_token.labels(routing.route.value, routing.backend).observe(time.perf_counter() - started)
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
        self.metrics.first_token.labels(routing.route.value, routing.backend).observe(time.perf_counter() - started)
        return StreamAnswer(routing, first, it, started, params.messages)

    async def finish_stream(self, answer: StreamAnswer, usage: Usage, api_key: str | None, status: str) -> None:
        answer.routing.usage = usage
        if status == "ok":
            self.nodes.finish(answer.routing.ticket, usage.completion_tokens)
        else:
            self.nodes.abandon(answer.routing.ticket)
        await self._account(answer.routing, usage, api_key, time.perf_counter() - answer.started, status=status)
        await self._release(answer.routing, api_key)  # the energy set aside (the dollars went back with the account)
        if status == "ok":
            await self._hold_for_feedback(answer.routing, answer.messages, api_key)

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

    async def _account(self, routing: Routing, usage: Usage, api_key: str | None, elapsed: float, *, status: str) -> None:
        routing.usage = usage
        if routing.collab is not None:
            rcfg = self._remote_cfg.get(routing.decision.cloud_backend or "")
            cost = cost_usd(rcfg, routing.collab.cloud) if rcfg is not None else 0.0
        else:
            rcfg = self._remote_cfg.get(routing.backend)
            cost = cost_usd(rcfg, usage) if rcfg is not None and routing.route is Route.CLOUD and not routing.cache else 0.0
        routing.cost_usd = cost
        self._energy(routing, usage)
        m = self.metrics
        m.requests.labels(routing.route.value, routing.backend, status).inc()
        if not routing.cache:
            m.latency.labels(routing.route.value, routing.backend).observe(elapsed)
        m.tokens.labels(routing.backend, "prompt").inc(usage.prompt_tokens)
        m.tokens.labels(routing.backend, "completion").inc(usage.completion_tokens)
        if cost:
            m.cloud_spend.labels(routing.backend).inc(cost)
        kid = key_id(api_key)
        reserved, routing.reserved_usd = routing.reserved_usd, 0.0  # the real cost is counted now: what was set aside goes back
        # One step in the shared state: a replica killed half-way leaves all of it or none (its reservation then expires).
        await self.state.account(
            kid,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cloud_cost_usd=cost,
            energy_joules=sum(float(side["joules"]) for side in routing.energy.values()),
            released_usd=reserved,
            decision={
                "id": routing.request_id,
                "ts": round(time.time(), 3),
                "key": kid,
                "status": status,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "latency_ms": round(elapsed * 1000, 2),
                "user": routing.user,
                **routing.as_dict(),
            },
        )

    def _energy(self, routing: Routing, usage: Usage) -> None:
        """Each side's energy: the local model's as measured, the cloud's estimated from its tokens."""
        if routing.cache:
            return
        cloud_usage = routing.collab.cloud if routing.collab is not None else (usage if routing.route is Route.CLOUD else None)
        sides = {"local": routing.energy_local}
        if cloud_usage is not None and (cloud_usage.prompt_tokens or cloud_usage.completion_tokens):
            sides["cloud"] = self._cloud_energy(cloud_usage.prompt_tokens, cloud_usage.completion_tokens)
        if routing.route is Route.LOCAL and routing.energy_local is not None:
            self.energy_rate.observe(routing.energy_local.joules, usage.prompt_tokens, usage.completion_tokens)
        for side, energy in sides.items():
            if energy is not None:
                routing.energy[side] = energy.as_dict()
                self.metrics.energy.labels(routing.route.value, side, energy.method).inc(energy.joules)

    # -- labels for federated training --------------------------------------------------------------
    def _shadow_due(self, routing: Routing) -> bool:
        """A sampled quality inspection: a local answer to a query with no privacy constraint, at ``shadow_rate``."""
        rate = self.cfg.state.shadow_rate
        d = routing.decision
        if rate <= 0 or routing.route is not Route.LOCAL or d.private or d.redact_only or d.personal_data:
            return False
        # Sampled by the answer id's hash, so the share is exact over many requests and a test can force it.
        return int(hashlib.sha256(routing.request_id.encode()).hexdigest()[:8], 16) / 2**32 < rate

    async def _shadow(
        self, routing: Routing, messages: list[dict[str, Any]], local_text: str, held: dict[str, Any], api_key: str | None
    ) -> None:
        """Ask the cloud too, then let the cloud judge which answer is better; the verdict is a label."""
        cloud_name = next((n for n, b in self.backends.items() if b.route is Route.CLOUD and b.health.healthy), None)
        if cloud_name is None:
            return
        if await asyncio.get_running_loop().run_in_executor(self._cpu, self.detector.kinds, [local_text]):
            return  # the judge would read the local answer: one that holds personal data stays on the device
        cloud, rcfg, kid = self.backends[cloud_name], self._remote_cfg.get(cloud_name), key_id(api_key)
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
            joules = self._cloud_energy(spent.prompt_tokens, spent.completion_tokens)
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
            await self._add_label(held, int(pick == "B"), "shadow", None)

    async def _hold_for_feedback(
        self, routing: Routing, messages: list[dict[str, Any]], api_key: str | None, answer: str | None = None
    ) -> None:
        """Keep the query's vector under the answer's id, so a rating can turn it into a label; never the text."""
        embedder = getattr(self.policy.scorer, "embedder", None)
        if not self.cfg.state.labels or embedder is None or routing.decision.score is None:
            return

        def vector_base_inputs() -> tuple[list[float], float | None, Any]:  # embedding and scoring: CPU work, off the loop
            text = _query_text(messages)
            vector = embedder.encode([text])[0]
            inputs = label_inputs(self.policy.scorer, text, len(messages))
            base = _base_score(self.policy.scorer, vector, text, len(messages))
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
        if answer is not None and self._shadow_due(routing):
            task = asyncio.get_running_loop().create_task(self._shadow(routing, messages, answer, record, api_key))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        if routing.collab is not None and routing.collab.escalated is not None:
            # A cascade is a label by itself: an escalation says the local answer was not good enough.
            await self._add_label(record, int(routing.collab.escalated), "cascade", None)

    async def _add_label(self, held: dict[str, Any], label: int, source: str, rating: float | None) -> None:
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
            await self._add_label(held, label, "feedback", rating)
        return {"object": "hybridgate.feedback", "id": request_id, "rating": rating, "label": label, "stored": label is not None}

    def describe(self) -> dict[str, Any]:
        return {name: b.describe() for name, b in self.backends.items()}

    def describe_nodes(self) -> dict[str, Any]:
        """The node choice's state: the weights in use, how many answers taught them, and each node's features."""
        return {"choice": self.cfg.nodes.choice, **self.nodes.describe()}

    async def drain(self) -> None:
        """Wait until the work answers left behind (shadow comparisons) is done: what the cloud was sent is then
        all sent, which a test can check without guessing how long to sleep."""
        while self._shadows:
            await asyncio.gather(*list(self._shadows), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await self.monitor.aclose()
        await self.node_share.aclose()
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.adapter is not None:
            await self.adapter.aclose()
        for b in self.backends.values():
            if b is not self.local or self._owns_local:
                await b.aclose()
        await self.state.aclose()
