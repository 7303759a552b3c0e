"""``hybridgate router``: train, evaluate, compare and calibrate routing classifiers on logged outcomes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer

from hybridgate.cli_common import fail

router_app = typer.Typer(no_args_is_help=True, help="Train, evaluate, compare and calibrate the routing classifier.")

DataOpt = typer.Option(..., "--data", help="CSV file or folder in the RouteLLM format (a prompt column, one True/False column per model).")
WeakOpt = typer.Option(..., "--weak", help="Column of the model that plays the local SLM.")
StrongOpt = typer.Option(..., "--strong", help="Column of the model that plays the cloud LLM.")
RouterOpt = typer.Option(None, "--router", help="Router folder or shipped router name (default: mmlu-static, shipped in the package).")
EngineOpt = typer.Option("auto", "--engine", help="Embedding engine: auto, onnx or torch.")
ExcludeOpt = typer.Option([], "--exclude", help="JSONL of prompts to drop (field eval_prompt); contaminated_prompts.jsonl beside the data is read anyway.")
CacheOpt = typer.Option(True, "--cache/--no-cache", help="Keep prompt vectors under ~/.cache/hybridgate/embeddings.")


class _Errors:
    """Turns the library's own errors into one line and exit code 2."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        from hybridgate.classifiers.artifact import ArtifactError
        from hybridgate.classifiers.data import DataError
        from hybridgate.classifiers.embedder import EmbedderError
        from hybridgate.classifiers.heads import HeadError

        if isinstance(exc, (ArtifactError, DataError, EmbedderError, HeadError, FileNotFoundError)):
            fail(str(exc))
        return False


def _embedder(model: str, engine: str) -> Any:
    from hybridgate.classifiers.embedder import load_embedder

    if engine not in ("auto", "onnx", "torch"):
        fail(f"--engine must be auto, onnx or torch, not {engine!r}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return load_embedder(model, engine, threads=os.cpu_count() or 1)  # type: ignore[arg-type]


def _cache_dir(enabled: bool) -> Path | None:
    from hybridgate.classifiers.embedder import onnx_cache_dir

    return onnx_cache_dir().parent / "embeddings" if enabled else None


def _vectors(embedder: Any, texts: list[str] | tuple[str, ...], cache: bool, what: str) -> Any:
    from hybridgate.classifiers.embedding_cache import embed_cached

    return embed_cached(embedder, list(texts), _cache_dir(cache), what)


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(col, justify="left" if col == "router" else "right")

    def pct(v: float | None) -> str:
        return "never" if v is None else f"{v * 100:.0f} %"

    for r in rows:
        table.add_row(r["router"], f"{r['apgr']:.3f}", pct(r["cpt50"]), pct(r["cpt80"]))
    Console().print(table)


def _load_data(data: list[Path], weak: str, strong: str, exclude: list[Path]) -> Any:
    from hybridgate.classifiers.data import load_routing_data

    for f in exclude:
        if not f.is_file():
            fail(f"{f}: no such file")
    return load_routing_data(data, weak, strong, exclude=exclude)


@router_app.command()
def train(
    data: list[Path] = DataOpt,
    weak: str = WeakOpt,
    strong: str = StrongOpt,
    out: Path = typer.Option(..., "--out", help="Folder to write the router to."),
    head: str = typer.Option("group-prior", "--head", help="group-prior, logistic, mlp or knn."),
    param: list[str] = typer.Option([], "--param", "-p", help="Head setting NAME=VALUE, repeatable (e.g. -p C=0.5)."),
    features: bool = typer.Option(False, "--features/--no-features", help="Append length, number, math, code and negation features."),
    split: str = typer.Option("train", "--split", help="Rows to train on: train (the benchmark split) or all."),
    name: str | None = typer.Option(None, "--name", help="Router name recorded in the header."),
    embedder: str = typer.Option(
        "all-MiniLM-L6-v2-static", "--embedder", help="sentence-transformers model name or folder; a -static suffix distils it."
    ),
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
) -> None:
    """Train a router and save it as arrays + a JSON header; report it on the test split when there is one."""
    from hybridgate.classifiers.artifact import save_router
    from hybridgate.classifiers.evaluation import evaluate
    from hybridgate.classifiers.heads import parse_params
    from hybridgate.classifiers.training import fit_router

    if split not in ("train", "all"):
        fail("--split for training must be train or all")
    with _Errors():
        rows = _load_data(data, weak, strong, exclude)
        fit_rows = rows.subset(split)  # type: ignore[arg-type]
        if len(fit_rows) < 10:
            fail(f"only {len(fit_rows)} rows in the {split} split; at least 10 are needed")
        emb = _embedder(embedder, engine)
        vectors = _vectors(emb, fit_rows.prompts, cache, f"embedding {len(fit_rows)} training prompts")
        model = fit_router(fit_rows, vectors, head, parse_params(param), embedder=emb.name, features=features)
        test = rows.subset("test") if split == "train" else rows.take(rows.weak != rows.weak)
        if len(test) and test.weak.mean() != test.strong.mean():
            tv = _vectors(emb, test.prompts, cache, f"embedding {len(test)} test prompts")
            ev = evaluate(model.name, model.score(tv, test.prompts), test)
            model.meta["metrics"] = {"split": "test", "n": len(test), **ev.curve.summary()}
        header = save_router(model, out, name=name)
    typer.echo(f"router {header['name']} version {header['version']} ({header['head']['kind']}) written to {out}")
    typer.echo(f"trained on {len(fit_rows)} rows; threshold for 30 % cloud calls: {model.default_threshold():.4f}")
    if "metrics" in header:
        _print_table([{"router": header["name"], **header["metrics"]}], "test split")


@router_app.command("eval")
def evaluate_cmd(
    data: list[Path] = DataOpt,
    weak: str = WeakOpt,
    strong: str = StrongOpt,
    out: Path = typer.Option(..., "--out", help="Folder for scores.csv, report.json and pgr.png."),
    router: str | None = RouterOpt,
    split: str = typer.Option("test", "--split", help="test (the benchmark split) or all (every row, for a held-out set)."),
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
) -> None:
    """Score a router on logged outcomes: APGR, CPT(50 %), CPT(80 %), a PNG and per-question scores."""
    from hybridgate.classifiers.artifact import load_router, read_header, resolve_router
    from hybridgate.classifiers.evaluation import evaluate, write_report

    if split not in ("test", "all"):
        fail("--split must be test or all")
    folder = resolve_router(router)
    with _Errors():
        header = read_header(folder)
        emb = _embedder(_embedder_model(header), engine)
        model = load_router(folder, embedder=emb.name, dim=emb.dim)
        rows = _load_data(data, weak, strong, exclude).subset(split)  # type: ignore[arg-type]
        if len(rows) == 0:
            fail(f"no rows in the {split} split")
        vectors = _vectors(emb, rows.prompts, cache, f"embedding {len(rows)} prompts")
        try:
            ev = evaluate(model.name, model.score(vectors, rows.prompts), rows, {"version": model.version, "head": header["head"]})
        except ValueError as e:
            fail(str(e))
        write_report(out, ev, rows, split, {"router_path": str(folder), "engine": emb.engine})
    _print_table([ev.row()], f"{model.name} ({model.version}) on {split}: {len(rows)} questions")
    typer.echo(f"wrote {out / 'scores.csv'}, {out / 'report.json'} and {out / 'pgr.png'}")


def _embedder_model(header: dict[str, Any]) -> str:
    return str((header.get("embedder") or {}).get("name") or "all-MiniLM-L6-v2")


@router_app.command()
def compare(
    data: list[Path] = DataOpt,
    weak: str = WeakOpt,
    strong: str = StrongOpt,
    out: Path | None = typer.Option(None, "--out", help="Folder for compare.json and compare.png."),
    embedder: list[str] = typer.Option(
        ["all-MiniLM-L6-v2-static", "all-MiniLM-L6-v2"], "--embedder", help="Embedders to compare, repeatable."
    ),
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
) -> None:
    """Every head (default settings, with and without text features) on every embedder, and every baseline:
    trained on the train split, scored on the test split, in one table."""
    from hybridgate.classifiers.baselines import group_prior_scores, length_scores, random_scores
    from hybridgate.classifiers.evaluation import evaluate, plot_curves
    from hybridgate.classifiers.heads import HEADS
    from hybridgate.classifiers.training import fit_router

    with _Errors():
        rows = _load_data(data, weak, strong, exclude)
        tr, te = rows.subset("train"), rows.subset("test")
        if len(tr) < 10 or len(te) == 0:
            fail(f"the split gives {len(tr)} train and {len(te)} test rows; need at least 10 and 1")
        evals = [evaluate("baseline: random", random_scores(te), te), evaluate("baseline: prompt length", length_scores(te), te)]
        prior = group_prior_scores(tr, te)
        if prior is not None:
            evals.append(evaluate("baseline: subject prior (knows the subject)", prior, te))
        embedders = []
        for name in embedder:
            emb = _embedder(name, engine)
            embedders.append({"name": emb.name, "dim": emb.dim, "engine": emb.engine})
            vtr = _vectors(emb, tr.prompts, cache, f"{emb.name}: {len(tr)} training prompts")
            vte = _vectors(emb, te.prompts, cache, f"{emb.name}: {len(te)} test prompts")
            for kind in HEADS:
                for feats in (False, True):
                    m = fit_router(tr, vtr, kind, embedder=emb.name, features=feats, calibrate=False)
                    label = f"{emb.name} · {kind}{' + text features' if feats else ''}"
                    evals.append(evaluate(label, m.score(vte, te.prompts), te, m.head.params()))
    _print_table([e.row() for e in evals], f"{len(tr)} train / {len(te)} test questions")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            "data": {"source": rows.source, "weak": weak, "strong": strong, "n_train": len(tr), "n_test": len(te)},
            "embedders": embedders,
            "results": [{**e.row(), "settings": {k: v for k, v in e.settings.items() if k != "groups"}} for e in evals],
        }
        (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        best = sorted((e for e in evals if not e.name.startswith("baseline")), key=lambda e: -e.curve.apgr)[:3]
        plot_curves(out / "compare.png", [e for e in evals if e.name.startswith("baseline: subject")] + best, te, "test split")
        typer.echo(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")


@router_app.command()
def calibrate(
    cloud_share: float = typer.Option(..., "--cloud-share", help="Target share of calls sent to the cloud, 0..1."),
    gray_share: float = typer.Option(0.0, "--gray-share", help="Share just below the cloud band that is neither clearly local nor cloud."),
    router: str | None = RouterOpt,
    data: list[Path] = typer.Option([], "--data", help="Your own prompts (CSV with a prompt column); default: the router's calibration set."),
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
) -> None:
    """Thresholds that send a target share of queries to the cloud, printed as config to paste."""
    import numpy as np

    from hybridgate.classifiers.artifact import load_router, read_header, resolve_router
    from hybridgate.classifiers.data import load_prompts
    from hybridgate.classifiers.model import quantile_threshold, score_quantiles

    if not 0.0 <= cloud_share <= 1.0 or not 0.0 <= gray_share <= 1.0 or cloud_share + gray_share > 1.0:
        fail("--cloud-share and --gray-share are shares between 0 and 1 whose sum is at most 1")
    folder = resolve_router(router)
    with _Errors():
        header = read_header(folder)
        if data:
            prompts = load_prompts(data)
            emb = _embedder(_embedder_model(header), engine)
            model = load_router(folder, embedder=emb.name, dim=emb.dim)
            quantiles = np.asarray(score_quantiles(model.score(_vectors(emb, prompts, cache, "embedding prompts"), prompts)))
            source = f"{len(prompts)} prompts from {', '.join(map(str, data))}"
        else:
            model = load_router(folder)
            q = (model.meta.get("calibration") or {}).get("quantiles")
            if not q:
                fail(f"router {model.name} carries no calibration; pass --data with your own prompts")
            quantiles = np.asarray(q)
            source = str(model.meta["calibration"].get("source"))
    t_cloud = quantile_threshold(quantiles, cloud_share)
    t_local = quantile_threshold(quantiles, cloud_share + gray_share)
    result = {
        "router": model.name,
        "version": model.version,
        "cloud_share": cloud_share,
        "gray_share": gray_share,
        "t_cloud": round(t_cloud, 6),
        "t_local": round(t_local, 6),
        "calibrated_on": source,
    }
    typer.echo(json.dumps(result, indent=2))
    typer.echo("\n# paste into your configuration:")
    typer.echo(f"router:\n  threshold: {t_cloud:.6f}")
    if gray_share > 0:
        typer.echo(f"  # scores in [{t_local:.6f}, {t_cloud:.6f}) form the gray band ({gray_share:.0%} of queries)")
