"""Secure aggregation (Flower's SecAgg+) on the federated path: the server-side strategy is handed the sum of a round's
survivors and nothing per gateway, gateways that vanish mid-round do not stall or corrupt it, and the protocol's
bounds (cohort, threshold, quantisation range) hold for every size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.data import load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.federated import secure
from hybridgate.federated.apps import ServerPlan
from hybridgate.federated.partition import assign
from hybridgate.federated.simulation import Vanish, run_federation

FIXTURE = Path(__file__).parent / "fixtures" / "routing"


@dataclass
class Recorder:
    """Not an attack: each simulated gateway writes down its true update (what it would send in the clear) where the
    test can read it, and sends it unchanged."""

    folder: str

    def __call__(self, new: np.ndarray, start: np.ndarray, partition: int) -> np.ndarray:
        np.save(Path(self.folder) / f"gateway{partition}.npy", new)
        return new


def test_the_server_sees_only_the_sum_and_two_of_ten_gateways_may_vanish_mid_round(query_embedder: Embedder, tmp_path: Path) -> None:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    keep = np.array([int(h[:8], 16) % 3 == 0 for h in data.sha256])  # a third of the rows: ten small gateways
    data = data.take(keep)
    x = query_embedder.encode(list(data.prompts))
    k, gone = 10, frozenset({2, 7})
    gateways = assign(data.prompts, data.groups, k, "iid")
    plan = ServerPlan(rounds=1, local_epochs=5, secure=True, secure_keep_seen=True)
    # Two gateways stop after their keys were shared, before sending their masked vector: their masks must be removed
    # with the others' shares of their secret key, or the sum would be garbage.
    res = run_federation(x, data.label, gateways, k, None, plan, attack=Recorder(str(tmp_path)), dropout=Vanish(gone))
    log = res.outcome.secure_log
    assert log.survivors == [8] and log.sampled == [10] and secure.dropouts_tolerated(10) >= 2
    true = {g: np.load(tmp_path / f"gateway{g}.npy").astype(np.float64) for g in range(k)}
    assert set(true) == set(range(k))  # the two vanished after training: their updates existed, and must not count
    counts = np.bincount(gateways, minlength=k).astype(np.float64)
    alive = [g for g in range(k) if g not in gone]
    mean = sum(counts[g] * true[g] for g in alive) / counts[alive].sum()  # the survivors' weighted average
    seen = log.seen[0]
    assert len(seen) == 8, "one entry a survivor, each the same unmasked average"
    assert log.counts == [[1] * 8], "a gateway's label count travels only masked, inside the sum"
    spread = min(np.linalg.norm(true[a] - true[b]) for a in range(k) for b in range(a + 1, k))
    for vector in seen:
        assert np.abs(vector - mean).max() < 1e-3, "the sum matches the survivors' true sum up to quantisation"
        for g in range(k):  # and it is no gateway's update, nor one of the vanished gateways' mixed in
            assert np.linalg.norm(vector - true[g]) > 0.05 * spread, g
    without_gone = sum(counts[g] * true[g] for g in range(k)) / counts.sum()
    assert np.abs(seen[0] - without_gone).max() > 1e-2, "the vanished gateways' trained updates are not in the sum"
    assert res.outcome.final is not None and np.abs(res.outcome.final - mean).max() < 1e-3
    assert res.measured_bytes_per_gateway_round > res.bytes_per_gateway_round  # the protocol's keys and shares are counted


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-5, max_value=3000))
def test_every_cohort_gets_a_threshold_of_at_least_three_survivors_or_is_refused(n: int) -> None:
    if n < secure.MIN_SECURE_COHORT or n > secure.MAX_SECURE_GATEWAYS:
        with pytest.raises(secure.SecureRefused, match="secure aggregation"):
            secure.protocol_shape(n)
        return
    shares, threshold = secure.protocol_shape(n)
    assert secure.MIN_SURVIVORS <= threshold < shares <= min(n, secure.MAX_NEIGHBOURS)
    assert shares % 2 == 1 or shares == n  # SecAgg+ wants an odd neighbourhood when it is not every gateway
    assert secure.dropouts_tolerated(n) == shares - threshold >= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e3, allow_nan=False), min_size=200, max_size=200), st.floats(min_value=-5, max_value=5))
def test_what_a_gateway_masks_stays_within_the_quantisation_range(values: list[float], share: float) -> None:
    vector = secure.weighted_vector(share, np.asarray(values))
    assert vector.shape == (201,) and (vector >= 0).all() and (vector <= 1).all() and vector.max() <= secure.CLIPPING_RANGE
    q = secure.histogram_quantiles(np.asarray(values))
    assert len(q) == 101 and all(0.0 <= a <= b <= 1.0 for a, b in zip(q, q[1:]))


def test_a_histogram_sum_calibrates_like_the_pooled_scores() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.beta(2, 5, size=n) for n in (40, 300, 75)]
    pooled = np.concatenate(parts)
    counts = [len(p) for p in parts]
    average = np.mean([secure.weighted_vector(n / 1000, secure.score_histogram(p)) for n, p in zip(counts, parts)], axis=0)
    histogram, used = secure.weighted_mean(average, len(parts))
    assert histogram is not None and used == pytest.approx(sum(counts) / 1000, rel=1e-4)
    q = secure.histogram_quantiles(histogram)
    assert np.abs(np.asarray(q) - np.quantile(pooled, np.linspace(0, 1, 101))).max() < 2 / secure.HISTOGRAM_BINS + 0.01


def test_a_gateway_that_requires_secure_aggregation_refuses_plain_requests() -> None:
    import time

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
    from flwr.app.message import make_message

    def arrived(kind: str, content: RecordDict) -> Message:  # a message as the SuperNode hands it to the ClientApp
        return make_message(Metadata(1, "m1", 0, 7, "", "1", time.time(), 60.0, kind), content)

    gate = secure.secure_gate(require_secure=True)
    called: list[str] = []

    def inner(msg: Message, ctxt: Context) -> Message:
        called.append(msg.metadata.message_type)
        return Message(RecordDict(), reply_to=msg)

    ctxt = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    for kind in ("train", "query", "query.node_weights"):
        reply = gate(arrived(kind, RecordDict({"arrays": ArrayRecord([np.zeros(3)]), "config": ConfigRecord({})})), ctxt, inner)
        assert reply.has_error() and "secure aggregation" in reply.error.reason, kind
    assert called == [], "nothing reached the handler: no update, no statistic in the clear"
    assert not gate(arrived("evaluate", RecordDict()), ctxt, inner).has_error() and called == ["evaluate"]
    open_gate = secure.secure_gate(require_secure=False)
    assert not open_gate(arrived("train", RecordDict({"config": ConfigRecord({})})), ctxt, inner).has_error()
    assert called == ["evaluate", "train"]


def test_a_gateway_that_skips_its_clipping_mod_is_bounded_only_by_the_quantisation_range() -> None:
    from hybridgate.federated.simulation import Flipped

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    labels, gateways, k, clip = (x[:, 0] > 0).astype(np.int8), rng.integers(0, 5, 300), 5, 0.5
    plan = ServerPlan(rounds=1, local_epochs=20, secure=True, dp_noise=1e-6, dp_clip=clip)
    res = run_federation(x, labels, gateways, k, None, plan, attack=Flipped(frozenset({0}), scale=1e4))
    final = res.outcome.final.astype(np.float64)
    # Honest gateways clip to 0.5, so their average cannot move the model further; the attacker skipped its mod ...
    assert np.linalg.norm(final) > 3 * clip
    # ... and only the protocol's clipping of each coordinate to +-8 bounds it: its share of the average is at most 8/k.
    assert np.abs(final).max() <= secure.CLIPPING_RANGE / k + clip + 1e-3
    assert res.outcome.epsilon is not None and res.outcome.secure_log.survivors == [k]
