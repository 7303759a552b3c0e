"""Several sources, many models: the loader, the across-sources protocols, the outcome model and the shipped router."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.across_sources import baselines, first_train_rows, training_rows
from hybridgate.classifiers.artifact import SHIPPED, load_router, save_router
from hybridgate.classifiers.data import DataError
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import OutcomeHead, for_pair
from hybridgate.classifiers.outcomes import Block, OutcomeModel, canonical
from hybridgate.classifiers.pair_score import Ability, fit_ability
from hybridgate.classifiers.sources import Source, in_train, load_source
from tests.frozen_slice import recompute_claim

ACROSS = SHIPPED / "across-static"


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_loader_reads_graded_cells_and_each_sources_cut(tmp_path: Path) -> None:
    rows = [[f"prompt {i}", "oasst", "0.25" if i % 2 else "", "True" if i % 3 else "False"] for i in range(40)]
    f = _write(tmp_path / "alpacaeval" / "a.csv", ["prompt", "dataset", "small", "big"], rows)
    src = load_source(f.parent)
    assert src.name == "alpacaeval" and src.cut == 0.5 and src.models == ("small", "big")
    small = src.column("small")
    assert np.isnan(small[0]) and small[1] == 0.25
    assert set(np.unique(src.column("big"))) == {0.0, 1.0}
    # The split is the sha256 rule at this source's cut, row by row.
    assert list(src.train) == [in_train(p, 0.5) for p in src.prompts]
    assert 0 < src.train.sum() < len(src)
    with pytest.raises(DataError, match="column small"):
        _write(tmp_path / "bad" / "b.csv", ["prompt", "small"], [["q", "1.5"]])
        load_source(tmp_path / "bad")
    with pytest.raises(DataError, match="no model column"):
        src.column("nobody")


def _source(name: str, n: int, groups: list[str] | None = None, seed: int = 0) -> Source:
    rng = np.random.default_rng(seed)
    prompts = tuple(f"{name} question {i}" for i in range(n))
    return Source(name, prompts, tuple(groups or ["t"] * n), ("weak", "strong"), rng.integers(0, 2, (n, 2)).astype(float), 0.5)


@given(st.sampled_from(["routellm-mmlu", "mmlu-pro", "llmrouter", "alpacaeval"]), st.booleans())
@settings(max_examples=20, deadline=None)
def test_mmlu_family_never_trains_on_another_members_rows(target: str, leave_out: bool) -> None:
    """Whatever is scored, no training row shares questions with it through MMLU (the data READMEs' rule)."""
    llm_groups = ["mmlu" if i % 4 == 0 else "trivia_qa" for i in range(40)]
    sources = [_source("routellm-mmlu", 30), _source("mmlu-pro", 30), _source("llmrouter", 40, llm_groups), _source("alpacaeval", 20)]
    rows = training_rows(sources, target, leave_out=leave_out)
    family = target != "alpacaeval"
    for s in sources:
        r = rows.get(s.name)
        if r is None:
            continue
        if s.name == target:
            assert not leave_out and np.array_equal(r, s.train)
        elif family:
            assert not (r & s.mmlu_rows).any(), f"{s.name}'s MMLU rows train a router scored on {target}"
        else:
            assert r.sum() == (len(s) if leave_out else s.train.sum())
    if leave_out:
        assert target not in rows


def test_labels_are_the_first_train_rows_by_sha256() -> None:
    src = _source("llmrouter", 60)
    got = first_train_rows(src, 5)
    assert all(src.train[got])
    shas = [hashlib.sha256(src.prompts[i].encode()).hexdigest() for i in got]
    assert shas == sorted(shas)
    assert set(got) < set(first_train_rows(src, 10))


def test_baselines_score_length_on_the_test_rows() -> None:
    n = 200
    prompts = tuple(("word " * (1 + i % 30)).strip() + f" #{i}" for i in range(n))
    long = np.array([len(p.split()) > 16 for p in prompts])
    out = np.stack([~long, ~long, np.ones(n, bool)], axis=1).astype(float)  # the weak models fail exactly the long prompts
    models = ("mistral-7b-instruct-v0.3", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct")
    src = Source("llmrouter", prompts, ("t",) * n, models, out, 0.5)
    res = baselines([src], lambda texts: np.zeros(len(texts)))
    test = ~src.train
    perfect = routing_curve(long[test].astype(float), out[test, 0], out[test, 2], [hashlib.sha256(p.encode()).hexdigest() for p in np.array(prompts)[test]])
    assert res["length"]["sources"]["llmrouter"]["mean_apgr"] == pytest.approx(perfect.apgr, abs=0.01)
    assert abs(res["random"]["sources"]["llmrouter"]["mean_apgr"] - 0.5) < 0.15


def _irt_blocks(seed: int = 0) -> tuple[list[Block], np.ndarray, dict[str, float]]:
    """Two sources of outcomes drawn from a 1-D item-response model whose difficulty is read from the inputs."""
    rng = np.random.default_rng(seed)
    abilities = {"tiny": -1.5, "mid": 0.0, "big": 1.5, "huge": 2.5}
    blocks, xs = [], []
    for s, models in (("one", ["tiny", "mid", "big"]), ("two", ["tiny", "big", "huge"])):
        x = rng.normal(size=(300, 6))
        b = 1.5 * x[:, 0]
        p = 1 / (1 + np.exp(-(np.array([abilities[m] for m in models])[None, :] - b[:, None])))
        blocks.append(Block(s, x, (rng.random(p.shape) < p).astype(float), models))
        xs.append(x)
    return blocks, np.concatenate(xs), abilities


def test_outcome_model_learns_abilities_and_the_pairs_gain() -> None:
    blocks, _, abilities = _irt_blocks()
    om = OutcomeModel(dim=2, steps=300, lr=0.05).fit(blocks)
    got = {m: om.ability(m)[0] for m in abilities}  # type: ignore[index]
    assert sorted(got, key=got.get) == sorted(abilities, key=abilities.get)  # type: ignore[arg-type]
    # The gain of big over tiny peaks at middling difficulty: the model must not rank by difficulty alone.
    head = OutcomeHead(local_model="tiny", cloud_model="big", model=om)
    x = np.zeros((3, 6))
    x[:, 0] = [-3.0, 0.0, 3.0]
    g = head.gain(x)
    assert g[1] > g[0] and g[1] > g[2]
    assert head.pair()[0].origin == "catalogue" and head.with_pair("unknown-1b", "big").pair()[0].origin == "prior"


def test_an_unknown_models_ability_moves_from_the_prior_to_its_labels() -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(size=(400, 2))
    truth = Ability("new", 1.2, np.array([0.8, -0.3]), "x")
    y = (rng.random(400) < 1 / (1 + np.exp(-(truth.offset + u @ truth.loadings)))).astype(float)
    prior = Ability("new", -1.0, np.zeros(2), "prior")
    assert fit_ability(u[:0], y[:0], prior, 1.5, 0.3) is prior
    few, many = fit_ability(u[:10], y[:10], prior, 1.5, 0.3), fit_ability(u, y, prior, 1.5, 0.3)
    assert abs(many.offset - truth.offset) < abs(few.offset - truth.offset) + 0.05 < abs(prior.offset - truth.offset) + 0.05
    assert abs(many.offset - truth.offset) < 0.3 and many.origin == "labels"


def test_catalogue_names_answer_to_their_aliases() -> None:
    assert canonical("mistralai/Mixtral-8x7B-Instruct-v0.1") == canonical("Mixtral-8x7B-Instruct-v0.1_concise") == "Mixtral-8x7B-Instruct-v0.1"
    assert canonical("gpt-4-1106-preview") == "gpt4_1106_preview"
    assert canonical("SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"


def test_outcomes_router_round_trips_without_pickle(tmp_path: Path) -> None:
    blocks, x, _ = _irt_blocks()
    om = OutcomeModel(dim=2, steps=50).fit(blocks)
    head = OutcomeHead(model=om)
    save_router(RouterModel(head, "toy", 6, meta={"name": "toy"}), tmp_path / "r")
    again = load_router(tmp_path / "r")
    assert isinstance(again.head, OutcomeHead)
    np.testing.assert_allclose(again.head.score(x), head.score(x), atol=1e-5)
    paired = for_pair(again, "tiny", "huge").head
    assert paired.pair()[1].origin == "catalogue" and not np.allclose(paired.score(x), head.score(x))
    with np.load(tmp_path / "r" / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


@pytest.mark.skipif(not (ACROSS / "router.json").is_file(), reason="the across-static router is not shipped in this checkout")
def test_shipped_across_router_scores_its_frozen_slice_as_its_header_claims(query_embedder: Embedder) -> None:
    """The header's APGR on a frozen slice of llmrouter's test split (tests/fixtures/across, MIT licence), recomputed."""
    header, model, got = recompute_claim(ACROSS, query_embedder)
    assert got == pytest.approx(header["claims"]["frozen_slice"]["apgr"], abs=2e-3)
    assert model.head.pair()[0].origin == model.head.pair()[1].origin == "catalogue"


@pytest.mark.skipif(not (ACROSS / "router.json").is_file(), reason="the across-static router is not shipped in this checkout")
def test_configured_pair_names_its_abilities_in_the_decision(query_embedder: Embedder) -> None:
    """router.local_model / router.cloud_model pick the catalogue's abilities; the scorer names them and the signals."""
    from hybridgate.router.classifier_scorer import ClassifierScorer
    from hybridgate.router.decision import RouteQuery
    from hybridgate.serving.config import RouterConfig

    cfg = RouterConfig(path="across-static", local_model="mistralai/Mixtral-8x7B-Instruct-v0.1", cloud_model="gpt-4o-2024-05-13")
    model = for_pair(load_router(ACROSS, embedder=query_embedder.name, dim=query_embedder.dim), cfg.local_model, cfg.cloud_model)
    scorer = ClassifierScorer(model, query_embedder)
    assert "local mistralai/Mixtral-8x7B-Instruct-v0.1: catalogue" in scorer.name and "cloud gpt-4o-2024-05-13: catalogue" in scorer.name
    score, signals = scorer.score_explained(RouteQuery("Prove that the square root of 2 is irrational, step by step.", 14, 1))
    assert 0.0 <= score <= 1.0 and signals
    unknown = ClassifierScorer(for_pair(load_router(ACROSS), "SmolLM2-135M-Instruct", None), query_embedder)
    assert "local SmolLM2-135M-Instruct: prior" in unknown.name and "cloud cloud: prior" in unknown.name


def test_compare_across_reports_every_protocol_per_source_and_pair(tmp_path: Path) -> None:
    """`router compare --across` on two small sources (made here): JSON and PNG, every pair and baseline."""
    from typer.testing import CliRunner

    from hybridgate.cli import app

    rng = np.random.default_rng(0)
    topics = ["add 17 and 25", "write a poem about the sea", "what is the capital of France", "prove the lemma"]
    llm = ["mistral-7b-instruct-v0.3", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct", "gemma-2-9b-it"]
    alp = ["Mixtral-8x7B-Instruct-v0.1_concise", "FuseChat-Llama-3.2-1B-Instruct", "gpt4_1106_preview"]
    llm_rows = [[f"{topics[i % 4]} (case {i})", "math", *(str(bool(rng.random() < 0.3 + 0.15 * j)) for j in range(4))] for i in range(120)]
    alp_rows = [[f"{topics[i % 4]}, please (request {i})", "oasst", *(f"{rng.random():.3f}" for _ in range(2)), "0.5"] for i in range(80)]
    a = _write(tmp_path / "llmrouter" / "l.csv", ["prompt", "task", *llm], llm_rows).parent
    b = _write(tmp_path / "alpacaeval" / "a.csv", ["prompt", "dataset", *alp], alp_rows).parent
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["router", "compare", "--across", "--data", str(a), "--data", str(b), "--protocol", "loso", "--out", str(out), "--no-cache"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "across.json").read_text())
    loso = report["leave_one_source_out"]
    assert set(loso) == {"0", "25", "50", "100", "200"} and (out / "across.png").is_file()
    for block in (loso["0"], report["baselines"]["length"], report["baselines"]["rule"]):
        assert {len(block["sources"][s]["pairs"]) for s in ("llmrouter", "alpacaeval")} == {2}
    bad = CliRunner().invoke(app, ["router", "compare", "--across", "--data", str(a), "--protocol", "everything"])
    assert bad.exit_code == 2 and "--protocol takes" in bad.output
