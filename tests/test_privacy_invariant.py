"""The privacy promise as an invariant of the policy, over the whole space of decisions (hypothesis).

"A private request never reaches the cloud" must hold under every score, band, mode, pinned model,
context overflow, deadline, budget, overload and node health; a request whose personal data may only be
redacted reaches the cloud only through the redact mode. The policy either answers within that, or
raises a clear error (403 privacy, 429 budget, 503 unroutable).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgate.router import (
    BudgetExhausted,
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    Mode,
    PrivacyViolation,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
    ToolsRefused,
    UnroutableError,
)

BACKENDS = {"local": Route.LOCAL, "edge": Route.LOCAL, "cloud": Route.CLOUD, "cloud-b": Route.CLOUD}
# Requested models that name a route through the cloud: a cloud backend, the cloud route, or a collaborative mode.
CLOUD_PINS = {"cloud", "cloud-b", "hybridgate/cloud", *(f"hybridgate/{m.value}" for m in Mode)}
MODELS = ["hybridgate/auto", "hybridgate/local", "hybridgate/cloud", *(f"hybridgate/{m.value}" for m in Mode), *BACKENDS]


@dataclass
class Fixed:
    value: float
    name: str = "fixed"

    def score(self, query: RouteQuery) -> float:
        return self.value


@st.composite
def situations(draw: st.DrawFn) -> tuple[RoutingPolicy, RouteQuery, RouteContext]:
    t_cloud = draw(st.floats(0.0, 1.0))
    policy = RoutingPolicy(
        Fixed(draw(st.floats(0.0, 1.0))),
        threshold=t_cloud,
        t_local=draw(st.none() | st.floats(0.0, 1.0)),
        mode=draw(st.sampled_from(list(Mode))),
        on_personal_data=draw(st.sampled_from(["local", "redact", "allow"])),
        tools=draw(st.sampled_from(["cloud", "local", "reject"])),
    )
    query = RouteQuery(
        "text",
        prompt_tokens=draw(st.integers(1, 100_000)),
        n_messages=draw(st.integers(1, 50)),
        requested_model=draw(st.sampled_from(MODELS)),
        personal_data=tuple(draw(st.sets(st.sampled_from(["email", "iban", "card", "phone", "name"]), max_size=3))),
        privacy_strict=draw(st.booleans()),
        deadline_ms=draw(st.none() | st.floats(1, 10_000)),
        needs_tools=draw(st.booleans()),
    )
    ctx = RouteContext(
        BACKENDS,
        healthy=frozenset(draw(st.sets(st.sampled_from(list(BACKENDS))))),
        local_context_tokens=draw(st.none() | st.integers(16, 8192)),
        overflow_to_cloud=draw(st.booleans()),
        cloud_budget_exhausted=draw(st.booleans()),
        latency_ms={n: draw(st.floats(0, 5000)) for n in BACKENDS if draw(st.booleans())},
        overloaded=frozenset(draw(st.sets(st.sampled_from(list(BACKENDS))))),
        energy_budget_exhausted=draw(st.booleans()),
        energy_cap_j=draw(st.none() | st.floats(0.0, 5000.0)),
        expected_joules={r: draw(st.floats(0.0, 10_000.0)) for r in (Route.LOCAL, Route.CLOUD) if draw(st.booleans())},
    )
    return policy, query, ctx


def _cloud_names(decision: object, ctx: RouteContext) -> list[str]:
    names = [decision.backend, decision.cloud_backend, *decision.fallbacks]  # type: ignore[attr-defined]
    return [n for n in names if n and ctx.backends.get(n) is Route.CLOUD]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_a_private_request_never_gets_a_cloud_backend(s: tuple[RoutingPolicy, RouteQuery, RouteContext]) -> None:
    policy, query, ctx = s
    asked_redact = query.requested_model == "hybridgate/redact"
    # Asking for the redact mode by name is the one way personal data under on_personal_data=local reach the
    # cloud: as placeholders. Strict requests never do.
    private = query.privacy_strict or (bool(query.personal_data) and policy.on_personal_data == "local" and not asked_redact)
    redact_only = not query.privacy_strict and bool(query.personal_data) and (
        policy.on_personal_data == "redact" or (policy.on_personal_data == "local" and asked_redact)
    )
    # Only a request that pins a cloud-bound route may be refused for its privacy: hybridgate/auto, the local
    # route and local backends always have an answer that keeps the data home (or another clear error), so a
    # PrivacyViolation there means a rule step sent the request towards the cloud and only the final check caught it.
    pins_cloud = query.requested_model in CLOUD_PINS
    try:
        d = policy.decide(query, ctx)
    except PrivacyViolation:
        assert pins_cloud and (query.privacy_strict or bool(query.personal_data)), query
        return
    except (UnroutableError, BudgetExhausted, ToolsRefused, EnergyBudgetExhausted, EnergyCapExceeded):
        return  # a clear error (503, 429, 400) is always allowed
    if private:
        assert d.route is Route.LOCAL and not _cloud_names(d, ctx) and d.private, d
    elif redact_only:
        assert d.route is not Route.CLOUD, d
        if _cloud_names(d, ctx):
            assert d.route is Route.COLLAB and d.mode is Mode.REDACT, d
        assert d.redact_only
    # Whatever the request, the decision's flags say what the gateway must enforce downstream.
    assert d.private == private and d.redact_only == redact_only


def test_a_strict_request_that_scored_local_stays_local_when_the_prompt_overflows() -> None:
    """The hole that was: privacy only acted on requests the score sent to the cloud."""
    policy = RoutingPolicy(Fixed(0.1), threshold=0.5)
    ctx = RouteContext(BACKENDS, frozenset(BACKENDS), local_context_tokens=512, overflow_to_cloud=True)
    d = policy.decide(RouteQuery("x", 5000, 1, privacy_strict=True), ctx)
    assert d.route is Route.LOCAL and d.private and any("privacy" not in r for r in d.reasons)
    busy = RouteContext(BACKENDS, frozenset(BACKENDS), overloaded=frozenset({"local", "edge"}))
    d = policy.decide(RouteQuery("x", 10, 1, personal_data=("email",)), busy)
    assert d.route is Route.LOCAL and d.private  # it waits for the busy local queue rather than leave
    redact = RoutingPolicy(Fixed(0.1), threshold=0.5, on_personal_data="redact")
    d = redact.decide(RouteQuery("x", 5000, 1, personal_data=("email",)), ctx)
    assert d.route is Route.COLLAB and d.mode is Mode.REDACT
