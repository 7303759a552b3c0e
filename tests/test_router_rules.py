"""Three-way routing and the user's rules, decided by the pure policy (no server, no model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from hybridgate.router import (
    Mode,
    PersonalDataDetector,
    PrivacyViolation,
    Route,
    RouteContext,
    RouteQuery,
    RoutingPolicy,
    UnroutableError,
)

BACKENDS = {"local": Route.LOCAL, "edge-a": Route.LOCAL, "edge-b": Route.LOCAL, "cloud": Route.CLOUD}


@dataclass
class Fixed:
    """A scorer that returns the score written in the query, so each test picks its band."""

    name: str = "fixed"

    def score(self, query: RouteQuery) -> float:
        return float(query.text)


policy = RoutingPolicy(Fixed(), threshold=0.6, t_local=0.4, mode=Mode.CASCADE)


def q(score: float, **kw: Any) -> RouteQuery:
    return RouteQuery(text=str(score), prompt_tokens=kw.pop("tokens", 10), n_messages=1, **kw)


def ctx(**kw: Any) -> RouteContext:
    return RouteContext(backends=BACKENDS, healthy=kw.pop("healthy", frozenset(BACKENDS)), **kw)


def test_two_thresholds_make_three_routes() -> None:
    assert policy.decide(q(0.2), ctx()).route is Route.LOCAL
    assert policy.decide(q(0.7), ctx()).route is Route.CLOUD
    mid = policy.decide(q(0.5), ctx())
    assert (mid.route, mid.mode, mid.cloud_backend) == (Route.COLLAB, Mode.CASCADE, "cloud")
    assert (mid.t_local, mid.threshold) == (0.4, 0.6)
    assert "between t_local 0.400 and t_cloud 0.600: cascade" in mid.reasons[0]
    assert mid.as_dict()["mode"] == "cascade"


def test_mode_aliases_pin_a_collaborative_mode() -> None:
    for mode in Mode:
        d = policy.decide(RouteQuery("x", 5, 1, requested_model=f"hybridgate/{mode.value}"), ctx())
        assert (d.route, d.mode) == (Route.COLLAB, mode)


def test_personal_data_stays_local_or_is_redacted() -> None:
    d = policy.decide(q(0.9, personal_data=("email",)), ctx())
    assert d.route is Route.LOCAL and "personal data (email) stays on the device" in d.reasons
    redacting = RoutingPolicy(Fixed(), threshold=0.6, t_local=0.4, on_personal_data="redact")
    r = redacting.decide(q(0.9, personal_data=("card", "name")), ctx())
    assert (r.route, r.mode) == (Route.COLLAB, Mode.REDACT)
    assert redacting.decide(q(0.1, personal_data=("card",)), ctx()).route is Route.LOCAL  # local needs no redaction


def test_strict_privacy_forbids_the_cloud_even_when_pinned() -> None:
    d = policy.decide(q(0.9, privacy_strict=True), ctx())
    assert d.route is Route.LOCAL and "strict forbids the cloud" in d.reasons[-1]
    with pytest.raises(PrivacyViolation):
        policy.decide(RouteQuery("x", 5, 1, requested_model="hybridgate/cloud", privacy_strict=True), ctx())
    with pytest.raises(PrivacyViolation):
        policy.decide(RouteQuery("x", 5, 1, requested_model="cloud", privacy_strict=True), ctx())
    # Privacy wins over overload: a busy device queues (or answers 503) rather than leak.
    busy = policy.decide(q(0.9, privacy_strict=True), ctx(overloaded=frozenset({"local", "edge-a", "edge-b"})))
    assert busy.route is Route.LOCAL
    with pytest.raises(UnroutableError):
        policy.decide(q(0.9, privacy_strict=True), ctx(healthy=frozenset({"cloud"})))


def test_budget_spent_keeps_collaborative_and_cloud_local() -> None:
    for score in (0.5, 0.9):
        d = policy.decide(q(score), ctx(cloud_budget_exhausted=True))
        assert d.route is Route.LOCAL and d.mode is None and "budget spent" in d.reasons[-1]


def test_local_overloaded_goes_to_another_node_then_the_cloud() -> None:
    d = policy.decide(q(0.1), ctx(overloaded=frozenset({"local"})))
    assert d.route is Route.LOCAL and d.backend == "edge-a"
    d = policy.decide(q(0.1), ctx(overloaded=frozenset({"local", "edge-a", "edge-b"})))
    assert d.route is Route.CLOUD and "local backends are busy" in d.reasons[-1]


def test_offline_collaborative_answers_locally() -> None:
    d = policy.decide(q(0.5), ctx(healthy=frozenset({"local"})))
    assert d.route is Route.LOCAL and "no healthy cloud backend" in d.reasons[-1]
    d = policy.decide(q(0.9), ctx(healthy=frozenset({"local"})))
    assert d.route is Route.LOCAL


def test_nodes_are_chosen_by_expected_latency_with_the_rest_kept_for_failover() -> None:
    d = policy.decide(q(0.1), ctx(latency_ms={"local": 300.0, "edge-a": 120.0, "edge-b": 80.0}))
    assert d.backend == "edge-b" and d.fallbacks == ("edge-a", "local")
    unmeasured = policy.decide(q(0.1), ctx(latency_ms={"local": 300.0, "edge-a": 120.0}))
    assert unmeasured.backend == "edge-b"  # never measured: tried first, so it gets measured


def test_deadline_picks_the_route_that_meets_it() -> None:
    lat = {"local": 90.0, "edge-a": 95.0, "edge-b": 99.0, "cloud": 700.0}
    d = policy.decide(q(0.9, deadline_ms=200), ctx(latency_ms=lat))
    assert d.route is Route.LOCAL and "deadline 200 ms: local (90 ms expected) meets it" in d.reasons[-1]
    assert policy.decide(q(0.9, deadline_ms=1000), ctx(latency_ms=lat)).route is Route.CLOUD
    slow_local = {"local": 900.0, "edge-a": 950.0, "edge-b": 990.0, "cloud": 150.0}
    assert policy.decide(q(0.1, deadline_ms=200), ctx(latency_ms=slow_local)).route is Route.CLOUD
    # The deadline never overrides privacy.
    assert policy.decide(q(0.1, deadline_ms=200, personal_data=("phone",)), ctx(latency_ms=slow_local)).route is Route.LOCAL


def test_long_prompt_skips_modes_that_need_the_local_model_to_read_it() -> None:
    long = ctx(local_context_tokens=500)
    assert policy.decide(q(0.5, tokens=2000), long).route is Route.CLOUD
    condense = RoutingPolicy(Fixed(), threshold=0.6, t_local=0.4, mode=Mode.CONDENSE)
    d = condense.decide(q(0.5, tokens=2000), long)
    assert (d.route, d.mode) == (Route.COLLAB, Mode.CONDENSE)


def test_detector_finds_each_kind_and_checks_checksums() -> None:
    det = PersonalDataDetector(names=["Ada Lovelace"])
    text = (
        "Write to ada@example.org or +44 20 7946 0958. Card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32. Regards, Ada Lovelace."
    )
    assert [f.kind for f in det.find(text)] == ["email", "phone", "card", "iban", "name"]
    assert det.kinds([text]) == ("email", "iban", "card", "phone", "name")
    clean = "Order 1234 5678 9012 3456 shipped in 2024; pi is 3.14159; IBAN DE00 1234 5678 9012 3456 78."
    assert det.find(clean) == []  # fails Luhn, and the IBAN's check digits are wrong


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("card 4111.1111.1111.1111 ok", "card", "4111.1111.1111.1111"),
        ("card 4111  1111  1111  1111 ok", "card", "4111  1111  1111  1111"),
        ("iban gb82 west 1234 5698 7654 32 thanks", "iban", "gb82 west 1234 5698 7654 32"),
        ("iban GB82WEST12345698765432.", "iban", "GB82WEST12345698765432"),
        ("mail jörg.müller@beispiel.de now", "email", "jörg.müller@beispiel.de"),
        ("mail 山田@例え.日本 ok", "email", "山田@例え.日本"),
        ("Ada\u00a0Lovelace wrote", "name", "Ada\u00a0Lovelace"),
        ("Dear Ada\nLovelace,", "name", "Ada\nLovelace"),
    ],
)
def test_detector_finds_what_it_used_to_miss(text: str, kind: str, value: str) -> None:
    found = PersonalDataDetector(["Ada Lovelace"]).find(text)
    assert [(f.kind, f.value) for f in found] == [(kind, value)]


def test_detector_scans_long_text_in_windows_with_the_same_findings() -> None:
    import random

    import hybridgate.router.privacy as privacy

    rng = random.Random(1)
    items = ["lorem ipsum", "ada@example.org", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "+44 20 7946 0958", "Ada Lovelace"]
    text = " ".join(rng.choice(items) + " " + "x" * rng.randint(1, 60) for _ in range(3000))
    detector = PersonalDataDetector(["Ada Lovelace"])
    windowed = [(f.kind, f.start, f.end) for f in detector.find(text)]
    window = privacy._WINDOW
    try:
        privacy._WINDOW = 10**9
        whole = [(f.kind, f.start, f.end) for f in detector.find(text)]
    finally:
        privacy._WINDOW = window
    assert len(text) > 5 * window and windowed == whole and len(whole) > 1000


def test_tools_rule_moves_a_tool_request_but_never_past_privacy() -> None:
    from hybridgate.router import ToolsRefused

    assert RoutingPolicy(Fixed(), 0.5).decide(q(0.1, needs_tools=True), ctx()).route is Route.CLOUD
    assert RoutingPolicy(Fixed(), 0.5, tools="local").decide(q(0.9, needs_tools=True), ctx()).route is Route.LOCAL
    with pytest.raises(ToolsRefused):
        RoutingPolicy(Fixed(), 0.5, tools="reject").decide(q(0.1, needs_tools=True), ctx())
    private = RoutingPolicy(Fixed(), 0.5).decide(q(0.1, needs_tools=True, privacy_strict=True), ctx())
    assert private.route is Route.LOCAL and "tools" in private.reasons[-2] and "strict" in private.reasons[-1]
    assert RoutingPolicy(Fixed(), 0.5).decide(q(0.1), ctx()).route is Route.LOCAL, "no tools, no rule"
