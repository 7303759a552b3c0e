"""From a score and the world's state to a route, with the reasons written down.

The order is fixed and each step that changes the route says why:

1. an explicit pin (a backend name, ``hybridgate/local|cloud``, or ``hybridgate/<mode>``);
2. the score against two thresholds: below ``t_local`` local, at or above
   ``t_cloud`` cloud, between them the collaborative ``mode``;
3. tools: a request whose answer may be a tool call goes where ``tools`` says
   (the cloud, the local model, or a refusal), whatever the score;
4. privacy: a strict request never reaches the cloud; personal data keeps the
   query local (or sends it through the redact mode, if so configured). This is
   an invariant, not a step: once a request is private, no later rule (context
   overflow, deadline, budget, overload, health) may choose a cloud backend, and
   the only outcomes are local, redact (where configured) or an error;
5. a prompt the local model cannot hold goes to the cloud;
6. a deadline picks the route whose expected first-token latency meets it;
7. the daily cloud budget, spent, keeps it local;
8. energy: a key whose daily energy budget is spent gets no answer (every route
   uses energy); a route whose expected energy for this request is over the
   key's per-request cap moves to one within it, or the request is refused;
9. a route with no healthy, unloaded backend moves to the other route.

Within a route the backend expected to answer soonest is chosen (by its node
score, :mod:`hybridgate.router.node_choice`, or its first-token latency) and
the others are kept, in order, for failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hybridgate.router.decision import Decision, Mode, Route, RouteContext, RouteQuery, Signal
from hybridgate.router.scorer import Scorer
from hybridgate.router.snapshot import LiveScorer, RoutingSnapshot, SnapshotSlot

AUTO = "hybridgate/auto"
ROUTE_ALIASES = {"hybridgate/local": Route.LOCAL, "hybridgate/cloud": Route.CLOUD}
MODE_ALIASES = {f"hybridgate/{m.value}": m for m in Mode}
PersonalDataRule = Literal["local", "redact", "allow"]
ToolsRule = Literal["cloud", "local", "reject"]


class UnroutableError(Exception):
    """No healthy backend can serve the request."""


class BudgetExhausted(Exception):
    """The request insists on the cloud, and the key's daily cloud budget is spent."""


class PrivacyViolation(Exception):
    """The request forbids the cloud (``x-hybridgate-privacy: strict``) but insists on it."""


class EnergyBudgetExhausted(Exception):
    """The key's daily energy budget is spent: every route would use more."""


class EnergyCapExceeded(Exception):
    """No route this request may take is expected to stay within the key's per-request energy cap."""


class ToolsRefused(Exception):
    """The request declares tools and this gateway answers none (``router.tools: reject``)."""


@dataclass
class _Draft:
    """The decision while the rules are applied to it."""

    route: Route
    mode: Mode | None
    reasons: list[str] = field(default_factory=list)
    privacy_local: bool = False  # private: no later rule may move it to the cloud
    redact_only: bool = False  # personal data under on_personal_data=redact: the cloud only through the redact mode
    signals: tuple[Signal, ...] = ()
    scorer_name: str | None = None  # the name of the scorer that gave the score, read with it


class RoutingPolicy:
    """The rules, and the routing snapshot (scorer, thresholds) they read: once per decision, at its start."""

    def __init__(
        self,
        scorer: Scorer,
        threshold: float = 0.5,  # t_cloud: at or above, the cloud
        t_local: float | None = None,  # below, local; None: the same as threshold (no collaborative band)
        mode: Mode = Mode.CASCADE,
        on_personal_data: PersonalDataRule = "local",
        tools: ToolsRule = "cloud",  # where an automatic request with tools goes
    ) -> None:
        self.mode = mode
        self.on_personal_data: PersonalDataRule = on_personal_data
        self.tools: ToolsRule = tools
        self._live: Scorer | None = None
        if isinstance(scorer, LiveScorer):  # its scorer is replaced while serving: share its slot, so one swap does
            self._live, self.slot = scorer, scorer.slot
            self.slot.swap(threshold=threshold, t_local=t_local)
        else:
            self.slot = SnapshotSlot(RoutingSnapshot(scorer, threshold, t_local))

    @property
    def snapshot(self) -> RoutingSnapshot:
        """What the next decision will use; read it once and use that one (a reload may replace it meanwhile)."""
        return self.slot.snapshot

    def swap(self, **changes: object) -> RoutingSnapshot:
        """Replace the snapshot (scorer, threshold, t_local) in one assignment; from the event loop only."""
        return self.slot.swap(**changes)

    @property
    def scorer(self) -> Scorer:
        """The live scorer this policy was built with (which shows the scorer in use now), else the one in use."""
        return self._live if self._live is not None else self.slot.snapshot.scorer

    @property
    def threshold(self) -> float:
        return self.slot.snapshot.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        """A new snapshot with this t_cloud; to change several things at once (and so no decision sees half of it),
        :meth:`swap` them together."""
        self.slot.swap(threshold=value)

    @property
    def t_local(self) -> float | None:
        return self.slot.snapshot.t_local

    @t_local.setter
    def t_local(self, value: float | None) -> None:
        self.slot.swap(t_local=value)

    @property
    def version(self) -> str | None:
        return self.slot.snapshot.version

    @property
    def t_low(self) -> float:
        return self.slot.snapshot.t_low

    def private(self, q: RouteQuery) -> bool:
        """Whether ``q`` may not reach a cloud backend at all (strict, or personal data kept on the device)."""
        return q.privacy_strict or (bool(q.personal_data) and self.on_personal_data == "local")

    def redact_only(self, q: RouteQuery) -> bool:
        """Whether ``q`` may reach the cloud only with its personal data replaced (the redact mode)."""
        return not q.privacy_strict and bool(q.personal_data) and self.on_personal_data == "redact"

    def decide(self, query: RouteQuery, ctx: RouteContext) -> Decision:
        snap = self.slot.snapshot  # the one read: a reload meanwhile changes the next decision, never half of this one
        decision = self._decide(query, ctx, snap)
        # The invariant, checked on the way out as well as kept by every step: a private request never has a
        # cloud backend, and a redact-only one reaches the cloud only through the redact mode.
        cloud = [n for n in (decision.backend, decision.cloud_backend, *decision.fallbacks) if n and ctx.backends.get(n) is Route.CLOUD]
        if cloud and decision.cloud_forbidden:
            raise PrivacyViolation("this request's privacy forbids the cloud")  # unreachable unless a step is wrong
        return decision

    def _decide(self, query: RouteQuery, ctx: RouteContext, snap: RoutingSnapshot) -> Decision:
        model = query.requested_model
        if model in ctx.backends:
            return self._pinned_backend(model, query, ctx, snap)
        if model in ROUTE_ALIASES or model in MODE_ALIASES:
            route = ROUTE_ALIASES.get(model, Route.COLLAB)
            mode = MODE_ALIASES.get(model)
            draft = _Draft(route, mode, [f"model {model} pins the {route.value} route" + (f" ({mode.value})" if mode else "")])
            draft.privacy_local, draft.redact_only = self.private(query), self.redact_only(query)
            if route is not Route.LOCAL:
                if query.privacy_strict:
                    raise PrivacyViolation(f"model {model} needs the cloud, which x-hybridgate-privacy: strict forbids")
                if draft.privacy_local and mode is Mode.REDACT:
                    # Asking for the redact mode by name keeps the personal data on the device: only placeholders leave.
                    draft.privacy_local, draft.redact_only = False, True
                elif draft.privacy_local:
                    raise PrivacyViolation(
                        f"model {model} needs the cloud, and the request holds personal data ({', '.join(query.personal_data)}) "
                        "that this gateway keeps on the device; ask for hybridgate/redact or hybridgate/local"
                    )
                elif draft.redact_only and mode is not Mode.REDACT:
                    draft.route, draft.mode = Route.COLLAB, Mode.REDACT
                    draft.reasons.append(f"personal data ({', '.join(query.personal_data)}): redacted before the cloud sees it")
            return self._finish(draft, None, query, ctx, snap, pinned=True)
        score, signals, scorer_name = snap.score(query)
        draft = self._by_score(score, snap)
        draft.signals, draft.scorer_name = signals, scorer_name
        self._tools(draft, query)
        self._privacy(draft, query)
        self._context(draft, query, ctx)
        self._deadline(draft, query, ctx)
        return self._finish(draft, score, query, ctx, snap, pinned=False)

    # -- the steps ------------------------------------------------------------------------------------
    def _by_score(self, score: float, snap: RoutingSnapshot) -> _Draft:
        t_cloud, t_low = snap.threshold, snap.t_low
        if score >= t_cloud:
            return _Draft(Route.CLOUD, None, [f"score {score:.3f} >= t_cloud {t_cloud:.3f}"])
        if score < t_low:
            return _Draft(Route.LOCAL, None, [f"score {score:.3f} < t_local {t_low:.3f}"])
        return _Draft(
            Route.COLLAB, self.mode, [f"score {score:.3f} between t_local {t_low:.3f} and t_cloud {t_cloud:.3f}: {self.mode.value}"]
        )

    def _tools(self, d: _Draft, q: RouteQuery) -> None:
        """A tool call is a contract (the right tool, arguments that match its schema) a small model often breaks:
        by default it goes to the cloud. Privacy, the next step, still wins over this."""
        if not q.needs_tools:
            return
        if self.tools == "reject":
            raise ToolsRefused("this gateway answers no request with tools (router.tools: reject)")
        if self.tools == "local":
            if d.route is not Route.LOCAL:
                d.route, d.mode = Route.LOCAL, None
                d.reasons.append("the request declares tools: router.tools keeps it local")
        elif d.route is Route.LOCAL or (d.route is Route.COLLAB and d.mode is not None and d.mode.local_generates):
            d.route, d.mode = Route.CLOUD, None
            d.reasons.append("the request declares tools: router.tools sends it to the cloud")

    def _privacy(self, d: _Draft, q: RouteQuery) -> None:
        # The flags are set whatever the score said: a request that scored local is just as private, and
        # the later steps (overflow, deadline, overload) must know it.
        d.privacy_local, d.redact_only = self.private(q), self.redact_only(q)
        if d.route is Route.LOCAL:
            return
        if q.privacy_strict:
            d.route, d.mode = Route.LOCAL, None
            d.reasons.append("x-hybridgate-privacy: strict forbids the cloud")
        elif d.privacy_local:
            d.route, d.mode = Route.LOCAL, None
            d.reasons.append(f"personal data ({', '.join(q.personal_data)}) stays on the device")
        elif d.redact_only:
            d.route, d.mode = Route.COLLAB, Mode.REDACT
            d.reasons.append(f"personal data ({', '.join(q.personal_data)}): redacted before the cloud sees it")

    def _move(self, d: _Draft, route: Route, reason: str) -> None:
        """Move to a plain local or cloud answer, saying why (the cloud through :meth:`_to_cloud`)."""
        if route is Route.CLOUD:
            self._to_cloud(d, reason)
        else:
            d.route, d.mode = route, None
            d.reasons.append(reason)

    def _to_cloud(self, d: _Draft, reason: str) -> None:
        """Move to the cloud: plainly, or through the redact mode when only that is allowed."""
        assert not d.privacy_local
        if d.redact_only:
            d.route, d.mode = Route.COLLAB, Mode.REDACT
            d.reasons.append(f"{reason} (redacted: personal data)")
        else:
            d.route, d.mode = Route.CLOUD, None
            d.reasons.append(reason)

    def _context(self, d: _Draft, q: RouteQuery, ctx: RouteContext) -> None:
        limit = ctx.local_context_tokens
        if limit is None or q.prompt_tokens <= limit or not ctx.overflow_to_cloud or d.privacy_local:
            return
        if d.route is Route.LOCAL or (d.route is Route.COLLAB and d.mode is not None and d.mode.local_generates):
            self._to_cloud(d, f"prompt of {q.prompt_tokens} tokens exceeds the local context of {limit}")

    def _deadline(self, d: _Draft, q: RouteQuery, ctx: RouteContext) -> None:
        if q.deadline_ms is None or d.privacy_local:
            return
        est = {r: ctx.expected_ms(r) for r in (Route.LOCAL, Route.CLOUD)}
        if d.route is Route.COLLAB:
            cloud, local = est[Route.CLOUD] or 0.0, est[Route.LOCAL] or 0.0
            mine: float | None = cloud + (local if d.mode is not None and d.mode.local_generates else 0.0)
        else:
            mine = est[d.route]
        if mine is None or mine <= q.deadline_ms:
            return
        options = [(ms, r) for r, ms in est.items() if ms is not None and r is not d.route]
        if not options:
            return
        ms, route = min(options, key=lambda o: o[0])
        if ms >= mine:
            return
        met = "meets" if ms <= q.deadline_ms else "comes closest to"
        reason = f"deadline {q.deadline_ms:.0f} ms: {route.value} ({ms:.0f} ms expected) {met} it, not {mine:.0f} ms"
        self._move(d, route, reason)

    def _energy_pinned(self, route: Route, mode: Mode | None, ctx: RouteContext, what: str) -> None:
        if ctx.energy_budget_exhausted:
            raise EnergyBudgetExhausted("the daily energy budget of this key is spent")
        cap, joules = ctx.energy_cap_j, ctx.route_joules(route, mode)
        if cap is not None and joules is not None and joules > cap:
            raise EnergyCapExceeded(
                f"{what} is expected to use {joules:.0f} J for this request, over this key's cap of {cap:.0f} J per request; "
                "ask for fewer tokens (max_tokens)"
            )

    def _energy(self, d: _Draft, ctx: RouteContext) -> None:
        """The energy rule, applied like the spend budget: a spent day refuses, a cap moves the route or refuses."""
        if ctx.energy_budget_exhausted:
            raise EnergyBudgetExhausted("the daily energy budget of this key is spent")
        cap, mine = ctx.energy_cap_j, ctx.route_joules(d.route, d.mode)
        if cap is None or mine is None or mine <= cap:
            return
        options = [
            (j, r)
            for r in (Route.LOCAL, Route.CLOUD)
            if r is not d.route
            and (j := ctx.route_joules(r, None)) is not None
            and j <= cap
            and not (r is Route.CLOUD and (d.privacy_local or ctx.cloud_budget_exhausted))
        ]
        if not options:
            raise EnergyCapExceeded(
                f"this request is expected to use {mine:.0f} J on the {d.route.value} route, over this key's cap of "
                f"{cap:.0f} J per request, and no other route it may take stays within it; ask for fewer tokens (max_tokens)"
            )
        joules, route = min(options, key=lambda o: o[0])
        reason = f"energy cap {cap:.0f} J: {route.value} expects {joules:.0f} J, {d.route.value} {mine:.0f} J"
        self._move(d, route, reason)

    def _pinned_backend(self, name: str, q: RouteQuery, ctx: RouteContext, snap: RoutingSnapshot) -> Decision:
        route = ctx.backends[name]
        if route is Route.CLOUD and q.privacy_strict:
            raise PrivacyViolation(f"backend {name} is in the cloud, which x-hybridgate-privacy: strict forbids")
        if route is Route.CLOUD and (self.private(q) or self.redact_only(q)):
            raise PrivacyViolation(
                f"backend {name} is in the cloud, and the request holds personal data ({', '.join(q.personal_data)}); "
                "ask for hybridgate/auto or hybridgate/redact instead"
            )
        if route is Route.CLOUD and ctx.cloud_budget_exhausted:
            raise BudgetExhausted("the daily cloud budget of this key is spent")
        self._energy_pinned(route, None, ctx, f"backend {name}")
        if name not in ctx.healthy:
            raise UnroutableError(f"backend {name!r} is not healthy")
        return Decision(
            route, name, None, None, snap.scorer.name, (f"model {name} pins backend {name}",), snap.version,
            personal_data=q.personal_data, private=self.private(q), redact_only=self.redact_only(q), snapshot=snap.serial,
        )

    def _finish(
        self, d: _Draft, score: float | None, q: RouteQuery, ctx: RouteContext, snap: RoutingSnapshot, *, pinned: bool
    ) -> Decision:
        if d.route is not Route.LOCAL and ctx.cloud_budget_exhausted:
            if pinned:
                raise BudgetExhausted("the daily cloud budget of this key is spent")
            d.route, d.mode = Route.LOCAL, None
            d.reasons.append("daily cloud budget spent; answering locally")
        if pinned:
            self._energy_pinned(d.route, d.mode, ctx, f"the {d.route.value} route")
        else:
            self._energy(d, ctx)
        # A pinned or privacy-bound request waits in a busy queue (and may get 503) rather than move.
        busy_ok = pinned or d.privacy_local
        local, cloud = ctx.available(Route.LOCAL, busy_ok=busy_ok), ctx.available(Route.CLOUD, busy_ok=busy_ok)
        if d.route is Route.COLLAB:
            assert d.mode is not None
            needs_local = d.mode.local_generates
            if not cloud:
                if pinned or not local:
                    raise UnroutableError(f"no healthy cloud backend for the {d.mode.value} mode")
                d.route, d.mode = Route.LOCAL, None
                d.reasons.append("no healthy cloud backend; answering locally")
            elif needs_local and not local:
                if pinned:
                    raise UnroutableError(f"no healthy local backend for the {d.mode.value} mode")
                d.route, d.mode = Route.CLOUD, None
                d.reasons.append("no healthy local backend; answering in the cloud")
            else:
                return self._decision(Route.COLLAB, local or cloud, score, q, d, ctx, snap, cloud_backend=cloud[0])
        wanted = local if d.route is Route.LOCAL else cloud
        if wanted:
            return self._decision(d.route, wanted, score, q, d, ctx, snap)
        other = Route.CLOUD if d.route is Route.LOCAL else Route.LOCAL
        others = cloud if other is Route.CLOUD else local
        if pinned or not others or (other is Route.CLOUD and d.privacy_local):
            raise UnroutableError(f"no healthy {d.route.value} backend")
        busy = [n for n in ctx.overloaded if ctx.backends.get(n) is d.route]
        why = f"{'the ' + d.route.value + ' backends are busy' if busy else 'no healthy ' + d.route.value + ' backend'}; using {other.value}"
        if other is Route.CLOUD and d.redact_only:
            d.route, d.mode = Route.COLLAB, Mode.REDACT
            d.reasons.append(f"{why} (redacted: personal data)")
            return self._decision(Route.COLLAB, others, score, q, d, ctx, snap, cloud_backend=others[0])
        d.reasons.append(why)
        d.route = other
        return self._decision(other, others, score, q, d, ctx, snap)

    def _decision(
        self,
        route: Route,
        names: list[str],
        score: float | None,
        q: RouteQuery,
        d: _Draft,
        ctx: RouteContext,
        snap: RoutingSnapshot,
        *,
        cloud_backend: str | None = None,
    ) -> Decision:
        return Decision(
            route,
            names[0],
            score,
            None if score is None else snap.threshold,
            d.scorer_name or snap.scorer.name,
            tuple(d.reasons),
            snap.version,
            t_local=None if score is None else snap.t_low,
            mode=d.mode if route is Route.COLLAB else None,
            cloud_backend=cloud_backend,
            fallbacks=tuple(names[1:]),
            personal_data=q.personal_data,
            signals=d.signals,
            private=d.privacy_local,
            redact_only=d.redact_only,
            nodes=tuple(ctx.node_scores[n] for n in names if n in ctx.node_scores),
            snapshot=snap.serial,
        )
