"""From a score and the world's state to a route, with the reasons written down."""

from __future__ import annotations

from dataclasses import dataclass

from hybridgate.router.decision import Decision, Route, RouteContext, RouteQuery, Scorer

AUTO = "hybridgate/auto"
ROUTE_ALIASES = {"hybridgate/local": Route.LOCAL, "hybridgate/cloud": Route.CLOUD}


class UnroutableError(Exception):
    """No healthy backend can serve the request."""


class BudgetExhausted(Exception):
    """The request insists on the cloud, and the key's daily cloud budget is spent."""


@dataclass
class RoutingPolicy:
    """Explicit model pins first, then the score against one threshold, then the hard rules.

    The hard rules (a route with no healthy backend, a prompt the local model
    cannot hold) override the score and say so in the reasons, so that an
    answer never comes from somewhere the user cannot explain.
    """

    scorer: Scorer
    threshold: float = 0.5

    @property
    def version(self) -> str | None:
        return getattr(self.scorer, "version", None)

    def decide(self, query: RouteQuery, ctx: RouteContext) -> Decision:
        model = query.requested_model
        if model in ctx.backends:
            return self._pinned_backend(model, ctx)
        if model in ROUTE_ALIASES:
            route = ROUTE_ALIASES[model]
            return self._finish(route, None, None, (f"model {model} pins the {route.value} route",), ctx, pinned=True)
        score = self.scorer.score(query)
        route = Route.CLOUD if score >= self.threshold else Route.LOCAL
        reasons = [f"score {score:.2f} {'>=' if route is Route.CLOUD else '<'} threshold {self.threshold:.2f}"]
        if (
            route is Route.LOCAL
            and ctx.local_context_tokens is not None
            and query.prompt_tokens > ctx.local_context_tokens
            and ctx.overflow_to_cloud
        ):
            route = Route.CLOUD
            reasons.append(f"prompt of {query.prompt_tokens} tokens exceeds the local context of {ctx.local_context_tokens}")
        return self._finish(route, score, None, tuple(reasons), ctx, pinned=False)

    def _pinned_backend(self, name: str, ctx: RouteContext) -> Decision:
        route = ctx.backends[name]
        if route is Route.CLOUD and ctx.cloud_budget_exhausted:
            raise BudgetExhausted("the daily cloud budget of this key is spent")
        if name not in ctx.healthy:
            raise UnroutableError(f"backend {name!r} is not healthy")
        return Decision(route, name, None, None, self.scorer.name, (f"model {name} pins backend {name}",), self.version)

    def _finish(
        self,
        route: Route,
        score: float | None,
        backend: str | None,
        reasons: tuple[str, ...],
        ctx: RouteContext,
        *,
        pinned: bool,
    ) -> Decision:
        threshold = None if score is None else self.threshold
        if route is Route.CLOUD and ctx.cloud_budget_exhausted:
            if pinned:
                raise BudgetExhausted("the daily cloud budget of this key is spent")
            route = Route.LOCAL
            reasons = (*reasons, "daily cloud budget spent; answering locally")
        if ctx.available(route):
            return Decision(route, backend or ctx.available(route)[0], score, threshold, self.scorer.name, reasons, self.version)
        other = Route.LOCAL if route is Route.CLOUD else Route.CLOUD
        if pinned or not ctx.available(other):
            raise UnroutableError(f"no healthy {route.value} backend")
        reasons = (*reasons, f"no healthy {route.value} backend; using {other.value}")
        return Decision(other, ctx.available(other)[0], score, threshold, self.scorer.name, reasons, self.version)
