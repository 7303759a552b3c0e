"""The transfer and adaptation protocols, the shape prior and its bounded correction, the on-device adapter,
and the guard against inverted routes: all on data the tests make, and on the router the package ships."""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hybridgate.classifiers.adapt import Adapter, fit_adapter
from hybridgate.classifiers.artifact import load_router, read_header, resolve_router, save_router
from hybridgate.classifiers.data import concat, load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.protocols import FOLDS, Bench, evaluate_recipe, fixed_recipe, head_recipe, subject_fold
from hybridgate.classifiers.shape import NAMES, shape_features
from hybridgate.classifiers.training import fit_router
from hybridgate.cli import app
from hybridgate.serving.router_reload import auc

PROMPTS = Path(__file__).parent / "fixtures" / "easy_hard_prompts.jsonl"
WORDS = "apple river stone cloud paper garden window silver market engine forest candle bridge orbit".split()


def _question(rng: random.Random, subject: str, long: bool) -> str:
    n = rng.randint(40, 70) if long else rng.randint(5, 12)
    body = " ".join(rng.choice(WORDS) for _ in range(n))
    return f"In {subject}, consider: {body}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve subjects; in every one, a long question is where the large model gains (a signal of shape that
    carries over), and each subject also has a rate of its own (a signal that does not)."""
    rng = random.Random(7)
    out = tmp_path_factory.mktemp("shaped")
    for i in range(12):
        subject = f"subject_{i:02d}"
        offset = rng.uniform(-0.25, 0.25)
        with (out / f"{subject}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["prompt", "small", "large"])
            for _ in range(150):
                long = rng.random() < 0.5
                p_weak = min(0.95, max(0.05, (0.3 if long else 0.8) + offset))
                w.writerow([_question(rng, subject, long), rng.random() < p_weak, rng.random() < 0.9])
    return out


def test_folds_follow_the_protocol_hash() -> None:
    # sha256("subject:mmlu_high_school_mathematics")[:8] read as an integer, modulo 5
    assert subject_fold("mmlu_high_school_mathematics") == 2
    assert {subject_fold(f"s{i}") for i in range(40)} == set(range(FOLDS))


def test_transfer_rewards_shape_and_exposes_topic_memory(shaped: Path, query_embedder: Embedder) -> None:
    data = load_routing_data(shaped, "small", "large")
    bench = Bench(data)
    assert bench.has_folds
    vectors = query_embedder.encode(list(data.prompts))
    length = np.array([len(p) for p in data.prompts], dtype=float)
    base = evaluate_recipe("length", fixed_recipe(length), bench, transfer=True, adaptation=False)
    prior = evaluate_recipe(
        "prior", head_recipe(data, vectors, "prior-correction", {"alpha": 1.0}, embedder=query_embedder.name, features=False),
        bench, transfer=True, adaptation=True,
    )
    assert prior.transfer is not None and len(prior.transfer["folds"]) == FOLDS
    assert prior.transfer["mean_apgr"] > 0.6 and base.transfer["mean_apgr"] > 0.6  # length carries over, and so does the prior
    # Each fold's test rows come only from its own subjects, and none of them was trained on.
    for k in range(FOLDS):
        tr, te = bench.fold_masks(k)
        assert not set(np.array(data.groups)[tr]) & set(np.array(data.groups)[te])
    assert prior.adaptation is not None and set(prior.adaptation) == {"0", "25", "50", "100", "200", "all"}
    assert prior.adaptation["0"] == pytest.approx(prior.transfer["mean_apgr"], abs=1e-4)


def test_shape_features_read_what_is_asked() -> None:
    f = dict(zip(NAMES, shape_features("Write a Python function that merges two sorted lists."), strict=True))
    assert f["code"] > 0 and f["creative"] == 0
    f = dict(zip(NAMES, shape_features("Write a haiku about the sea."), strict=True))
    assert f["creative"] == 1 and f["code"] == 0
    f = dict(zip(NAMES, shape_features("Solve for x: 2x + 3 = 11, step by step."), strict=True))
    assert f["math"] > 0 and f["steps"] == 1
    f = dict(zip(NAMES, shape_features("hello", n_messages=5), strict=True))
    assert f["greeting"] == 1 and f["turns"] > 0


@pytest.mark.parametrize(
    "attack",
    ["@ " + "a." * 300_000, ";" + " " * 500_000 + "x", "(" * 200_000, "$" + "1+" * 200_000, "x^2 " * 150_000, "A. " * 200_000],
)
def test_shape_scan_is_linear_on_adversarial_input(attack: str) -> None:
    """Timed against a control measured in the same run, ordinary prose of the same length, in CPU time and
    best of three (other processes on the machine slow both alike): a bounded linear read takes about as long
    on either (0.7-2x measured), while a quadratic pattern would take minutes on the attack, 10^4 times more."""
    prose = ("The quick brown fox jumps over the lazy dog. " * (len(attack) // 45 + 1))[: len(attack)]
    assert cpu_time(shape_features, attack) < 20 * cpu_time(shape_features, prose)


def cpu_time(fn: Callable[[str], object], text: str, runs: int = 3) -> float:
    """The fewest CPU seconds of ``runs`` calls: the call's own work, without the waits for a shared core."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        fn(text)
        best = min(best, time.process_time() - started)
    return best


def test_prior_correction_round_trips_and_explains(shaped: Path, query_embedder: Embedder, tmp_path: Path) -> None:
    data = load_routing_data(shaped, "small", "large").subset("all")
    vectors = query_embedder.encode(list(data.prompts))
    model = fit_router(data, vectors, "prior-correction", {"alpha": 1.0, "bound": 0.5}, embedder=query_embedder.name)
    save_router(model, tmp_path / "r", name="shaped")
    loaded = load_router(tmp_path / "r", embedder=query_embedder.name, dim=query_embedder.dim)
    np.testing.assert_allclose(loaded.score(vectors[:50], data.prompts[:50]), model.score(vectors[:50], data.prompts[:50]), atol=5e-5)
    # The correction is bounded: the score's log-odds never move by more than `bound` from the prior's.
    x = loaded.inputs(vectors, data.prompts)
    prior, corr, gate = loaded.head.parts(x)
    assert np.all(np.abs(corr) <= 0.5 + 1e-6) and np.all((gate >= 0) & (gate <= 1))
    pushes = dict(loaded.explain(x[:1]))
    assert "length" in pushes and set(pushes) <= {*NAMES, "topic"}
    # Signs hold: a feature expected to make a query harder never got a negative weight.
    w = read_header(tmp_path / "r")["head"]["params"]["weights"]
    assert w["code"] >= 0 and w["math"] >= 0 and w["creative"] <= 0 and w["greeting"] <= 0


def test_adapter_starts_as_identity_and_learns_from_labels() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    base = rng.uniform(0.2, 0.8, size=400)
    labels = (vectors[:, 0] > 0.3).astype(int)  # the router missed what this gateway's traffic says
    np.testing.assert_allclose(fit_adapter(base, vectors, labels[:0]).apply(base, vectors), base, atol=1e-9)
    adapter = fit_adapter(base[:200], vectors[:200], labels[:200])
    after, before = auc(adapter.apply(base[200:], vectors[200:]), labels[200:]), auc(base[200:], labels[200:])
    assert before is not None and after is not None and after > before + 0.2
    again = Adapter.from_arrays(adapter.arrays(), adapter.rows)
    np.testing.assert_allclose(again.apply(base, vectors), adapter.apply(base, vectors), atol=1e-5)


def test_shipped_default_ranks_hard_prompts_above_easy_ones(query_embedder: Embedder) -> None:
    """A guard against inversions ("math goes local"), not a benchmark: 40 hand-written prompts, each
    marked by what a 135M model can and cannot do."""
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 40 and {r["category"] for r in rows} >= {"chat", "writing", "extraction", "code", "math", "reasoning"}
    model = load_router(resolve_router(None), embedder=query_embedder.name, dim=query_embedder.dim)
    texts = [r["prompt"] for r in rows]
    scores = model.score(query_embedder.encode(texts), texts)
    hard = np.array([r["difficulty"] == "hard" for r in rows])
    share = float(np.mean(scores[hard][:, None] > scores[~hard][None, :]))
    assert share >= 0.9, f"only {share:.0%} of easy/hard pairs ranked hard above easy"


def test_two_labelled_sets_train_one_router(shaped: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    rows = list(csv.DictReader((shaped / "subject_00.csv").open(encoding="utf-8")))
    with other.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "subject", "tiny", "huge"])
        for r in rows:
            w.writerow([r["prompt"] + " (again)", "again", r["small"], r["large"]])
    both = concat([load_routing_data(shaped, "small", "large"), load_routing_data(other, "tiny", "huge")])
    assert len(both) == 12 * 150 + 150 and "tiny" in both.weak_name
    runner = CliRunner()
    out = tmp_path / "router"
    result = runner.invoke(
        app,
        ["router", "train", "--data", str(shaped), "--data", str(other), "--weak", "small", "--strong", "large", "--weak", "tiny",
         "--strong", "huge", "--head", "prior-correction", "--out", str(out), "--no-cache", "--embedder", "all-MiniLM-L6-v2-static"],
    )
    assert result.exit_code == 0, result.output
    assert read_header(out)["training"]["rows"] == len(both.subset("train"))
    bad = runner.invoke(app, ["router", "train", "--data", str(shaped), "--data", str(other), "--weak", "a", "--weak", "b", "--weak", "c",
                              "--strong", "x", "--out", str(tmp_path / "no")])
    assert bad.exit_code == 2 and "once per --data" in bad.output


def test_compare_and_eval_report_both_protocols(shaped: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["router", "compare", "--data", str(shaped), "--weak", "small", "--strong", "large", "--embedder", "all-MiniLM-L6-v2-static",
         "--head", "prior-correction", "--head", "knn", "--variant", "prior-correction:alpha=0", "--out", str(tmp_path / "cmp"),
         "--no-cache", "--heldout", str(shaped / "subject_03.csv")],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    names = [r["router"] for r in summary["results"]]
    assert names[:3] == ["baseline: random", "baseline: prompt length", "baseline: rule scorer"]
    assert any("alpha=0" in n for n in names)
    for r in summary["results"]:
        assert r["transfer"]["mean_apgr"] == pytest.approx(np.mean([f["apgr"] for f in r["transfer"]["folds"]]), abs=1e-3)
        assert set(r["adaptation"]) == {"0", "25", "50", "100", "200", "all"} and r["heldout"]["apgr"] is not None
    for png in ("compare.png", "adaptation.png"):
        assert (tmp_path / "cmp" / png).read_bytes()[:4] == b"\x89PNG"
    trained = tmp_path / "r"
    assert runner.invoke(app, ["router", "train", "--data", str(shaped), "--weak", "small", "--strong", "large", "--head",
                               "prior-correction", "--out", str(trained), "--no-cache"]).exit_code == 0
    ev = runner.invoke(app, ["router", "eval", "--router", str(trained), "--data", str(shaped), "--weak", "small", "--strong", "large",
                             "--out", str(tmp_path / "ev"), "--no-cache", "--no-adaptation"])
    assert ev.exit_code == 0, ev.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert len(report["transfer"]["folds"]) == FOLDS and report["adaptation"] is None and "transfer protocol" in ev.output


def test_blend_round_trips_explains_and_keeps_its_rules_off_multiple_choice(shaped: Path, query_embedder: Embedder, tmp_path: Path) -> None:
    data = load_routing_data(shaped, "small", "large")
    bench = Bench(data)
    vectors = query_embedder.encode(list(data.prompts))
    blend = evaluate_recipe(
        "blend", head_recipe(data, vectors, "blend", None, embedder=query_embedder.name, features=False), bench, transfer=True, adaptation=False
    )
    assert blend.transfer is not None and blend.transfer["mean_apgr"] > 0.6, blend.transfer  # length carries over here too
    everything = data.subset("all")
    model = fit_router(everything, query_embedder.encode(list(everything.prompts)), "blend", {"w_rules": 2.0}, embedder=query_embedder.name)
    save_router(model, tmp_path / "b", name="blend")
    loaded = load_router(tmp_path / "b", embedder=query_embedder.name, dim=query_embedder.dim)
    sample = list(everything.prompts[:40])
    v = query_embedder.encode(sample)
    np.testing.assert_allclose(loaded.score(v, sample), model.score(v, sample), atol=5e-5)
    pushes = dict(loaded.explain(loaded.inputs(v[:1], sample[:1])))
    assert {"length", "neighbours"} <= set(pushes) <= {"length", "neighbours", "topic", *NAMES}
    # The written rules speak only on open requests: the same mathematics asked with lettered options moves nothing.
    asked = "Solve for x step by step: 3x + 7 = 22, and show the working."
    offered = asked + "\nA. 3\nB. 5\nC. 7\nD. 9\nAnswer:"
    terms = [loaded.head.terms(loaded.inputs(query_embedder.encode([t]), [t])) for t in (asked, offered)]
    assert terms[0]["math"][0] > 0 and terms[0]["steps"][0] > 0
    assert terms[1]["math"][0] == 0 and terms[1]["steps"][0] == 0
