"""What an answer costs a key, in dollars and joules: set aside before, counted after, given back either way.

The request path calls :meth:`Accounting.reserve` before a backend is called,
:meth:`Accounting.account` once the answer's usage is known, and
:meth:`Accounting.release` in every case; budgets are kept in the shared state,
so replicas behind one Redis keep one budget per key.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybridgate.router import BudgetExhausted, EnergyBudgetExhausted, Route
from hybridgate.serving.backends.base import Backend, ChatParams, Usage
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.backends.pricing import cost_usd
from hybridgate.serving.config import CollaborationConfig, GatewayConfig, RemoteConfig
from hybridgate.serving.energy import Energy, EnergyRate, cloud_energy
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.records import Routing
from hybridgate.serving.state import StateStore
from hybridgate.serving.state.base import key_id

# What a cloud answer without max_tokens is assumed to cost at most, for setting budget aside before the call.
DEFAULT_CLOUD_ANSWER_TOKENS = 1024


def worst_usage(prompt_tokens: int, max_tokens: int, choices: int, route: Route) -> Usage:
    """The most a cloud call can bill: every choice's whole answer (``n`` x ``max_tokens``), and the prompt once,
    or once per choice in a collaborative mode (which runs the whole mode per choice)."""
    return Usage(prompt_tokens * (choices if route is Route.COLLAB else 1), max_tokens * choices)


class Accounting:
    """The budgets (daily dollars, daily joules, joules per request) and the spend and energy of each answer."""

    def __init__(
        self,
        cfg: GatewayConfig,
        state: StateStore,
        metrics: Metrics,
        local: LlamaBackend,
        backends: Mapping[str, Backend],
        remote_cfg: Mapping[str, RemoteConfig],
        energy_rate: EnergyRate,
        collab_cfg: CollaborationConfig,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.local = local
        self.backends = backends
        self.remote_cfg = remote_cfg
        self.energy_rate = energy_rate
        self.collab_cfg = collab_cfg

    # -- before deciding ------------------------------------------------------------------------------
    async def budgets_spent(self, api_key: str | None) -> tuple[bool, bool]:
        """(the key's daily cloud budget is spent, its daily energy budget is spent), from one read of its usage."""
        budgets, key = self.cfg.budgets, api_key or ""
        usd, joules = budgets.limit_for(key), budgets.energy_limit_for(key)
        if usd is None and joules is None:
            return False, False
        used = await self.state.usage_today(key_id(api_key))
        return usd is not None and used.cloud_cost_usd >= usd, joules is not None and used.energy_joules >= joules

    def expected_joules(self, prompt_tokens: int, answer_tokens: int | None, choices: int = 1) -> dict[Route, float]:
        """This request's energy on each route, before it runs: the local model at its measured joules per token,
        the cloud at its configured ones, for every one of its ``n`` choices (the local model reads the prompt once
        per choice, the cloud once). An answer without max_tokens counts local.default_max_tokens."""
        n = (answer_tokens or self.local.default_max_tokens) * choices
        return {
            Route.LOCAL: self.energy_rate.expected(prompt_tokens * choices, n),
            Route.CLOUD: self.cloud_energy(prompt_tokens, n).joules,
        }

    def cloud_energy(self, prompt_tokens: int, completion_tokens: int) -> Energy:
        e = self.cfg.energy
        return cloud_energy(prompt_tokens, completion_tokens, e.cloud_joules_per_output_token, e.cloud_joules_per_input_token)

    # -- setting aside --------------------------------------------------------------------------------
    async def reserve(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """Both budgets set aside, dollars first: a refused cloud reservation may move the answer to the local model,
        and the energy reserved is that of the route finally taken."""
        await self.reserve_usd(routing, params, prompt_tokens, api_key)
        try:
            await self.reserve_joules(routing, params, prompt_tokens, api_key)
        except BaseException:
            await self.release(routing, api_key)
            raise

    def worst_joules(self, routing: Routing, params: ChatParams, prompt_tokens: int) -> float:
        """The most energy this answer can take on its route: every choice's whole answer and its prompt, on the
        local model at its measured rate, on the cloud at its configured one; a collaborative mode counts both
        (the local part bounded by the mode's own limit, its output read again by the cloud)."""
        n, route = params.n, routing.route
        if route is Route.COLLAB:
            c = self.collab_cfg
            limit = max(c.cascade_max_tokens, c.draft_max_tokens)
            local_answer = min(params.max_tokens or limit, limit)
        else:
            local_answer = params.max_tokens or self.local.default_max_tokens
        local = self.energy_rate.expected(prompt_tokens * n, local_answer * n)
        cloud_prompt = prompt_tokens + (local_answer if route is Route.COLLAB else 0)
        cloud = worst_usage(cloud_prompt, params.max_tokens or DEFAULT_CLOUD_ANSWER_TOKENS, n, route)
        cloud_j = self.cloud_energy(cloud.prompt_tokens, cloud.completion_tokens).joules
        return {Route.LOCAL: local, Route.CLOUD: cloud_j}.get(route, local + cloud_j)

    async def reserve_joules(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """The daily energy budget, set aside like the cloud budget: checked before the request only, concurrent
        requests each saw room and together used more. Refused: 429 (energy_budget_exhausted), whatever the route."""
        limit = self.cfg.budgets.energy_limit_for(api_key or "")
        if limit is None:
            return
        worst = self.worst_joules(routing, params, prompt_tokens)
        if not await self.state.reserve(key_id(api_key), worst, limit, "joules"):
            raise EnergyBudgetExhausted("the daily energy budget of this key is spent (or set aside for requests in flight)")
        routing.reserved_joules = worst

    async def reserve_usd(self, routing: Routing, params: ChatParams, prompt_tokens: int, api_key: str | None) -> None:
        """Set the most this answer's cloud call can cost aside against the key's daily budget, atomically, before
        making it: concurrent calls cannot together overspend (checking, then spending, let them). Refused: a
        pinned request gets 429; ``auto`` answers locally."""
        cloud_name = routing.decision.cloud_backend if routing.route is Route.COLLAB else routing.backend
        rcfg = self.remote_cfg.get(cloud_name or "")
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

    async def release(self, routing: Routing, api_key: str | None) -> None:
        if routing.reserved_usd:
            reserved, routing.reserved_usd = routing.reserved_usd, 0.0
            await self.state.release(key_id(api_key), reserved)
        if routing.reserved_joules:  # after accounting: counted and still set aside for a moment, never neither
            joules, routing.reserved_joules = routing.reserved_joules, 0.0
            await self.state.release(key_id(api_key), joules, "joules")

    # -- counting -------------------------------------------------------------------------------------
    async def account(self, routing: Routing, usage: Usage, api_key: str | None, elapsed: float, *, status: str) -> None:
        routing.usage = usage
        if routing.collab is not None:
            rcfg = self.remote_cfg.get(routing.decision.cloud_backend or "")
            cost = cost_usd(rcfg, routing.collab.cloud) if rcfg is not None else 0.0
        else:
            rcfg = self.remote_cfg.get(routing.backend)
            cost = cost_usd(rcfg, usage) if rcfg is not None and routing.route is Route.CLOUD and not routing.cache else 0.0
        routing.cost_usd = cost
        self.energy(routing, usage)
        m = self.metrics
        route = routing.route.value
        m.child(m.requests, route, routing.backend, status).inc()
        if not routing.cache:
            m.child(m.latency, route, routing.backend).observe(elapsed)
        m.child(m.tokens, routing.backend, "prompt").inc(usage.prompt_tokens)
        m.child(m.tokens, routing.backend, "completion").inc(usage.completion_tokens)
        if cost:
            m.child(m.cloud_spend, routing.backend).inc(cost)
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
            decision=routing.log_entry(kid, usage, elapsed, status),
        )

    def energy(self, routing: Routing, usage: Usage) -> None:
        """Each side's energy: the local model's as measured, the cloud's estimated from its tokens."""
        if routing.cache:
            return
        cloud_usage = routing.collab.cloud if routing.collab is not None else (usage if routing.route is Route.CLOUD else None)
        sides = {"local": routing.energy_local}
        if cloud_usage is not None and (cloud_usage.prompt_tokens or cloud_usage.completion_tokens):
            sides["cloud"] = self.cloud_energy(cloud_usage.prompt_tokens, cloud_usage.completion_tokens)
        if routing.route is Route.LOCAL and routing.energy_local is not None:
            self.energy_rate.observe(routing.energy_local.joules, usage.prompt_tokens, usage.completion_tokens)
        for side, energy in sides.items():
            if energy is not None:
                routing.energy[side] = energy.as_dict()
                self.metrics.child(self.metrics.energy, routing.route.value, side, energy.method).inc(energy.joules)
