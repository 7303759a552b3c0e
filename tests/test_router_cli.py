"""``hybridgate router train|eval|compare|calibrate`` on the project's own fixture set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybridgate.classifiers.heads import HEADS
from hybridgate.cli import app

FIXTURE = str(Path(__file__).parent / "fixtures" / "routing")
COLS = ["--weak", "small-model", "--strong", "large-model"]
runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("router") / "fixture-router"
    text = run("router", "train", "--data", FIXTURE, *COLS, "--head", "logistic", "-p", "C=1", "--out", str(out), "--no-cache")
    assert "written to" in text and "APGR" in text
    return out


def test_train_writes_a_verified_router_with_test_metrics(trained: Path) -> None:
    header = json.loads((trained / "router.json").read_text())
    assert header["head"]["kind"] == "logistic" and header["head"]["params"]["C"] == 1
    assert header["metrics"]["split"] == "test" and header["metrics"]["apgr"] > 0.6
    assert header["training"]["rows"] < 100  # the train split of 599 rows


def test_eval_writes_scores_report_and_plot(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    text = run("router", "eval", "--router", str(trained), "--data", FIXTURE, *COLS, "--out", str(out), "--no-cache")
    assert "APGR" in text
    report = json.loads((out / "report.json").read_text())
    assert {"apgr", "cpt50", "cpt80", "n_test", "acc_weak", "acc_strong", "router", "settings"} <= set(report)
    with (out / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["n_test"] and set(rows[0]) == {"prompt_sha256", "score"}
    assert (out / "pgr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    every = tmp_path / "all"
    run("router", "eval", "--router", str(trained), "--data", FIXTURE, *COLS, "--split", "all", "--out", str(every), "--no-cache")
    assert json.loads((every / "report.json").read_text())["n_test"] == 599


def test_compare_puts_every_head_and_baseline_in_one_table(tmp_path: Path) -> None:
    text = run("router", "compare", "--data", FIXTURE, *COLS, "--out", str(tmp_path), "--no-cache")
    results = json.loads((tmp_path / "compare.json").read_text())["results"]
    names = [r["router"] for r in results]
    assert names[:3] == ["baseline: random", "baseline: prompt length", "baseline: rule scorer"]
    for emb in ("all-MiniLM-L6-v2-static", "all-MiniLM-L6-v2"):
        assert f"{emb} · prior-correction" in names and f"{emb} · blend" in names
        for head in ("group-prior", "logistic", "mlp", "knn"):
            assert f"{emb} · {head}" in names and f"{emb} · {head} + text features" in names
    # every head but the federated gd-logistic and the three fitted across sources (outcomes, pair-blend, pair-blend-mmlu)
    assert len(names) == 3 + 2 * (2 + 2 * (len(HEADS) - 6))
    # Three subjects cannot make five folds of unseen subjects: the transfer columns stay empty, and say so.
    assert all(r["transfer"] is None and r["adaptation"] is None for r in results)
    assert "subject prior" in text and (tmp_path / "compare.png").is_file()


def test_eval_reports_accuracy_per_joule_for_each_cloud_share(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "ipw"
    text = run("router", "eval", "--router", str(trained), "--data", FIXTURE, *COLS, "--out", str(out), "--no-cache",
               "--no-transfer", "--no-adaptation", "--weak-joules", "20", "--strong-joules", "1000")
    assert "accuracy per kJ peaks at" in text and (out / "ipw.png").read_bytes()[:4] == b"\x89PNG"
    ipw = json.loads((out / "report.json").read_text())["intelligence_per_watt"]
    assert ipw["joules_per_answer"][0] == 20 and ipw["joules_per_answer"][-1] == 1000
    assert ipw["accuracy_per_kj"][0] == pytest.approx(ipw["accuracy"][0] / 20 * 1000, rel=1e-4)
    assert ipw["accuracy_per_kj"][ipw["share"].index(ipw["best_share"])] == max(ipw["accuracy_per_kj"])
    bad = runner.invoke(app, ["router", "eval", "--router", str(trained), "--data", FIXTURE, *COLS, "--out", str(out), "--weak-joules", "5"])
    assert bad.exit_code == 2 and "go together" in bad.output


def test_calibrate_gives_thresholds_for_a_cloud_share(trained: Path, tmp_path: Path) -> None:
    text = run("router", "calibrate", "--router", str(trained), "--cloud-share", "0.3", "--gray-share", "0.2")
    result = json.loads(text[: text.index("\n# paste")])
    assert 0 <= result["t_local"] <= result["t_cloud"] <= 1
    # The paste block is configuration the gateway takes as it is, with both thresholds of the gray band.
    import yaml

    from hybridgate.serving.config import RouterConfig

    pasted = RouterConfig(**yaml.safe_load(text[text.index("\n# paste") :])["router"])
    assert (pasted.threshold, pasted.t_local) == (result["t_cloud"], result["t_local"])
    prompts = tmp_path / "mine.csv"
    prompts.write_text("prompt\n" + "\n".join(f"question number {i}?" for i in range(50)) + "\n")
    mine = run("router", "calibrate", "--router", str(trained), "--cloud-share", "0.5", "--data", str(prompts), "--no-cache")
    assert "50 prompts from" in mine


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["router", "train", "--data", "/nonexistent", *COLS, "--out", "/tmp/x"], "no such file or folder"),
        (["router", "train", "--data", FIXTURE, "--weak", "nope", "--strong", "large-model", "--out", "/tmp/x"], "missing column(s) nope"),
        (["router", "train", "--data", FIXTURE, *COLS, "--head", "forest", "--out", "/tmp/x", "--no-cache"], "unknown head 'forest'"),
        (["router", "calibrate", "--cloud-share", "1.5"], "between 0 and 1"),
        (["router", "eval", "--router", "/nonexistent", "--data", FIXTURE, *COLS, "--out", "/tmp/x"], "not a router folder"),
    ],
)
def test_bad_input_gives_one_readable_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
