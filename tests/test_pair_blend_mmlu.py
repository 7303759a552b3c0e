"""The pair-blend head with blend-static's recipe on MMLU as one more term: its pair is the pair-blend part's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridgate.classifiers import sources as sources_mod
from hybridgate.classifiers.artifact import SHIPPED, load_router, save_router
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.heads import TrainingSet
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import for_pair
from hybridgate.classifiers.outcome_router import query_inputs
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_blend_mmlu import MmluBlendHead, combine, fit_mmlu_part, part_stats
from hybridgate.classifiers.pair_blend_train import PairBlendLearner, training_set, weighted
from hybridgate.classifiers.pair_score import Ability
from hybridgate.classifiers.sources import Source
from tests.frozen_slice import recompute_claim

DIM = 8
WORDS = ("prove the theorem step by step", "hello there", "write a poem about", "what is the capital of", "solve 3x + 4 = 19")


@pytest.fixture(scope="module")
def parts() -> tuple[PairBlendHead, TrainingSet, TrainingSet, dict[str, np.ndarray]]:
    """Two sources, three models; the pair-blend head on both and an MMLU part on the first one's rows."""
    rng = np.random.default_rng(0)
    out, inputs, vectors = [], {}, {}
    patch = pytest.MonkeyPatch()
    for s, (name, base) in enumerate((("routellm-mmlu", 0.0), ("chat", 0.4))):
        n = 240
        kind = rng.integers(0, len(WORDS), n)
        prompts = tuple(f"{WORDS[k]} {name} {i} " + "more words " * int(kind[i]) for i, k in enumerate(kind))
        hard = kind / (len(WORDS) - 1)
        weak = (rng.random(n) > hard).astype(float)
        strong = np.maximum(weak, (rng.random(n) < base + 0.5 * hard).astype(float))
        mid = np.maximum(weak, (rng.random(n) < 0.3 * hard).astype(float))
        src = Source(name, prompts, tuple(f"g{k}" for k in kind), ("w", "m", "s"), np.column_stack([weak, mid, strong]), 0.5)
        patch.setitem(sources_mod.PAIRS, name, (("w", "s"),))
        centres = np.random.default_rng(s).normal(size=(len(WORDS), DIM))
        vec = centres[kind] + 0.3 * rng.normal(size=(n, DIM))
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        vectors[name], inputs[name] = vec, query_inputs(vec, list(prompts))
        out.append(src)
    rows = {s.name: s.train for s in out}
    head = PairBlendLearner(out, inputs, vectors, {"dim": 2, "steps": 60}, {"centroids_k": 4}).fit(rows)
    mmlu = out[0]
    idx = np.nonzero(mmlu.train)[0]
    gain = (mmlu.column("s")[idx] - mmlu.column("w")[idx]).astype(np.int8)
    part_data = TrainingSet(inputs[mmlu.name][idx].astype(np.float32), (gain > 0).astype(np.int64), gain, [mmlu.groups[i] for i in idx])
    yield head, part_data, training_set(out, inputs, rows), inputs
    patch.undo()


def _built(parts, w_mmlu: float, **part_weights: float) -> MmluBlendHead:  # type: ignore[no-untyped-def]
    head, part_data, data, _ = parts
    part = fit_mmlu_part(part_data, DIM, centroids_k=4)
    return combine(head, part, part_data.x, w_mmlu, data, **part_weights)


def test_the_mmlu_term_is_the_parts_sum_standardised_over_its_own_queries(parts) -> None:  # type: ignore[no-untyped-def]
    head, part_data, _, inputs = parts
    built = _built(parts, 2.0)
    x = inputs["chat"][:60].astype(np.float32)
    raw = built._raw_terms(x)
    mean, sd = part_stats(built.mmlu, part_data.x)
    np.testing.assert_allclose(raw["MMLU blend"], 2.0 * (built.mmlu._sum(x) - mean) / sd, rtol=1e-5, atol=1e-5)
    # Without its MMLU term it ranks as the pair-blend head it was built on.
    off = _built(parts, 0.0)
    assert "MMLU blend" not in off._raw_terms(x)
    assert np.array_equal(np.argsort(off.with_pair("w", "s").logit(x)), np.argsort(head.with_pair("w", "s").logit(x)))
    # Its neighbours alone: one unit-spread term over the part's own queries.
    only = _built(parts, 1.0, w_length=0.0, w_neighbours=1.0, w_topic=0.0, w_rules=0.0)
    left_out = only.mmlu._sum(part_data.x, neighbours=only.mmlu.neighbours.score_left_out())
    assert abs(float(((left_out - only.mmlu_stats[0]) / only.mmlu_stats[1]).std()) - 1.0) < 1e-4


def test_its_pair_and_local_ability_are_the_pair_blend_parts(parts) -> None:  # type: ignore[no-untyped-def]
    head, _, _, inputs = parts
    built = _built(parts, 1.0)
    x = inputs["routellm-mmlu"][:40].astype(np.float32)
    known = built.with_pair("w", "s")
    assert isinstance(known, MmluBlendHead) and known.w_mmlu == 1.0 and known.mmlu is built.mmlu
    assert known.knows_pair() and "pair gain" in known.terms(x) and "MMLU blend" in known.terms(x)
    assert not built.with_pair(None, None).knows_pair() and "pair gain" not in built.with_pair(None, None).terms(x)
    base = weighted(head, w_gain=head.w_gain).with_pair("w", "s")
    np.testing.assert_allclose(known.outcome.gain(x), base.outcome.gain(x))
    local = known.with_local(Ability("w", 0.3, np.array([0.5, -0.2]), "labels", 40))
    assert isinstance(local, MmluBlendHead) and local.mmlu is built.mmlu and local.pair()[0].origin == "labels"
    np.testing.assert_allclose(local.outcome.gain(x), base.with_local(Ability("w", 0.3, np.array([0.5, -0.2]), "labels", 40)).outcome.gain(x))
    assert isinstance(known.pair_blend(), PairBlendHead) and not isinstance(known.pair_blend(), MmluBlendHead)


def test_saved_and_loaded_without_pickle_it_scores_the_same(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, inputs = parts
    built = _built(parts, 2.0, w_length=0.0, w_neighbours=1.0, w_topic=0.0, w_rules=0.0)
    x = inputs["chat"][:40].astype(np.float32)
    save_router(RouterModel(built.with_pair(None, None), "toy", DIM, features=False), tmp_path / "r", name="pair-blend-mmlu-toy")
    again = load_router(tmp_path / "r")
    assert isinstance(again.head, MmluBlendHead) and again.head.mmlu.w_topic == 0.0 and again.head.w_mmlu == 2.0
    np.testing.assert_allclose(again.head.score(x), built.with_pair(None, None).score(x), atol=1e-4)
    paired = for_pair(again, "w", "s")
    assert isinstance(paired.head, MmluBlendHead)
    np.testing.assert_allclose(paired.head.score(x), built.with_pair("w", "s").score(x), atol=1e-4)
    _, pushes = paired.score_explained(x[:1])
    assert "MMLU blend" in dict(pushes) and "pair gain" in dict(pushes)
    with np.load(tmp_path / "r" / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_damped_on_multiple_choice_such_a_query_is_scored_by_the_mmlu_part_alone(parts) -> None:  # type: ignore[no-untyped-def]
    from hybridgate.classifiers.shape import NAMES

    _, _, _, inputs = parts
    gated = _built(parts, 1.0)
    gated.w_choice = 0.0
    x = inputs["chat"][:60].astype(np.float32).copy()
    open_terms = gated.with_pair("w", "s")._raw_terms(x)
    x[:, DIM + NAMES.index("choices")] = 1.0  # lettered options on every row
    mc = gated.with_pair("w", "s")._raw_terms(x)
    assert all(np.allclose(v, 0.0) for k, v in mc.items() if k != "MMLU blend") and not np.allclose(mc["MMLU blend"], 0.0)
    assert not np.allclose(open_terms["pair gain"], 0.0)  # open requests keep the pair-blend part
    half = _built(parts, 1.0)
    half.w_choice = 0.5
    np.testing.assert_allclose(half.with_pair("w", "s")._raw_terms(x)["pair gain"],
                               0.5 * _built(parts, 1.0).with_pair("w", "s")._raw_terms(x)["pair gain"], rtol=1e-5, atol=1e-6)


SHIPPED_DEFAULT = SHIPPED / "pair-blend-mmlu-static"
needs_shipped = pytest.mark.skipif(not (SHIPPED_DEFAULT / "router.json").is_file(), reason="pair-blend-mmlu-static is not shipped here")
STEMS = ("Which organ produces insulin?", "What is the derivative of x^2?", "Who wrote the Federalist Papers?",
         "Which gas is most abundant in the air we breathe?", "What is the time complexity of binary search on a sorted array?",
         "Which court decided Marbury v. Madison, and on what ground?", "What is 7 times 8?", "Which element has the symbol Fe?",
         "Which philosopher wrote the Critique of Pure Reason? Consider the history of German idealism before answering.",
         "In econometrics, what does heteroskedasticity imply for the usual OLS standard errors?")


@needs_shipped
def test_shipped_default_scores_its_frozen_slice_as_its_header_claims(query_embedder: Embedder) -> None:
    """The header's APGR on 150 frozen test rows of llmrouter (tests/fixtures/across), recomputed for its pair."""
    header, _, got = recompute_claim(SHIPPED_DEFAULT, query_embedder)
    assert got == pytest.approx(header["claims"]["frozen_slice"]["apgr"], abs=2e-3)
    assert set(header["trained_on"]) == {"routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter"}
    assert header["selection"]["verdict"]["replaces_default"] and header["head"]["params"]["w_choice"] == 0.0


@needs_shipped
def test_shipped_default_ranks_multiple_choice_questions_as_blend_static_does(query_embedder: Embedder) -> None:
    """What the MMLU gates hold it to: on lettered options its score is blend-static's recipe alone, for any pair;
    on an open request the pair's gain and the four sources' signals join in."""
    default = load_router(SHIPPED_DEFAULT, embedder=query_embedder.name, dim=query_embedder.dim)
    blend = load_router(SHIPPED / "blend-static", embedder=query_embedder.name, dim=query_embedder.dim)
    texts = [s + "\nA. one\nB. two\nC. three\nD. four" for s in STEMS]
    vec = query_embedder.encode(texts)
    for pair in ((None, None), ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")):
        head = for_pair(load_router(SHIPPED_DEFAULT), *pair).head
        assert np.corrcoef(head.logit(default.inputs(vec, texts)), blend.head.logit(blend.inputs(vec, texts)))[0, 1] > 0.99999
    open_text = [STEMS[1]]
    paired = for_pair(load_router(SHIPPED_DEFAULT), "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
    _, pushes = paired.score_explained(paired.inputs(query_embedder.encode(open_text), open_text))
    assert {"pair gain", "MMLU blend", "length"} <= set(dict(pushes))
