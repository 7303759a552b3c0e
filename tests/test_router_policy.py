"""The pure routing policy: pins, threshold, hard rules, and the reasons it gives."""

from __future__ import annotations

import pytest

from hybridgate.router import (
    BudgetExhausted,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
    RuleScorer,
    UnroutableError,
)

BACKENDS = {"local": Route.LOCAL, "edge": Route.LOCAL, "cloud": Route.CLOUD}
ALL = frozenset(BACKENDS)


def q(text: str = "hi", tokens: int = 5, model: str = "hybridgate/auto", n: int = 1) -> RouteQuery:
    return RouteQuery(text=text, prompt_tokens=tokens, n_messages=n, requested_model=model)


def ctx(**kw: object) -> RouteContext:
    return RouteContext(backends=BACKENDS, healthy=kw.pop("healthy", ALL), **kw)  # type: ignore[arg-type]


policy = RoutingPolicy(RuleScorer(long_prompt_tokens=300), threshold=0.5)


def test_rule_scorer_orders_queries_by_visible_features() -> None:
    s = RuleScorer()
    plain = s.score(q("What is the capital of France?", 10))
    code = s.score(q("```python\ndef f(x): return x\n``` why does this fail?", 30))
    long_math = s.score(q("Prove the theorem step by step", 600))
    assert plain < 0.5 <= code < long_math <= 1.0


def test_short_plain_query_goes_local_and_hard_one_to_cloud() -> None:
    easy = policy.decide(q("What time is it?"), ctx())
    hard = policy.decide(q("Prove that the integral converges, step by step", 400), ctx())
    assert (easy.route, easy.backend) == (Route.LOCAL, "local")
    assert (hard.route, hard.backend) == (Route.CLOUD, "cloud")
    assert hard.score is not None and hard.score >= hard.threshold  # type: ignore[operator]
    assert "t_cloud" in hard.reasons[0]


def test_pins() -> None:
    assert policy.decide(q(model="hybridgate/cloud"), ctx()).route is Route.CLOUD
    d = policy.decide(q(model="edge"), ctx())
    assert (d.route, d.backend, d.score) == (Route.LOCAL, "edge", None)
    with pytest.raises(UnroutableError):
        policy.decide(q(model="edge"), ctx(healthy=frozenset({"local", "cloud"})))
    with pytest.raises(UnroutableError):
        policy.decide(q(model="hybridgate/cloud"), ctx(healthy=frozenset({"local"})))


def test_unhealthy_route_moves_auto_to_the_other_one() -> None:
    d = policy.decide(q("Prove it step by step", 400), ctx(healthy=frozenset({"local"})))
    assert d.route is Route.LOCAL and "no healthy cloud backend" in d.reasons[-1]
    d = policy.decide(q("hi"), ctx(healthy=frozenset({"cloud"})))
    assert d.route is Route.CLOUD
    with pytest.raises(UnroutableError):
        policy.decide(q("hi"), ctx(healthy=frozenset()))


def test_local_skips_unhealthy_first_node() -> None:
    d = policy.decide(q("hi"), ctx(healthy=frozenset({"edge", "cloud"})))
    assert (d.route, d.backend) == (Route.LOCAL, "edge")


def test_prompt_beyond_local_context() -> None:
    strict = RoutingPolicy(RuleScorer(), threshold=1.0)
    d = strict.decide(q("word", 5000), ctx(local_context_tokens=2000))
    assert d.route is Route.CLOUD and "exceeds the local context" in d.reasons[-1]
    d = strict.decide(q("word", 5000), ctx(local_context_tokens=2000, overflow_to_cloud=False))
    assert d.route is Route.LOCAL


def test_budget_rule() -> None:
    d = policy.decide(q("Prove it step by step", 400), ctx(cloud_budget_exhausted=True))
    assert d.route is Route.LOCAL and "budget" in d.reasons[-1]
    with pytest.raises(BudgetExhausted):
        policy.decide(q(model="cloud"), ctx(cloud_budget_exhausted=True))
    with pytest.raises(BudgetExhausted):
        policy.decide(q(model="hybridgate/cloud"), ctx(cloud_budget_exhausted=True))


def test_decision_serialises() -> None:
    d = policy.decide(q(), ctx())
    data = d.as_dict()
    assert data["route"] == "local" and data["router"] == "rules-v1" and isinstance(data["reasons"], list)
