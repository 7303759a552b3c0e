"""``hybridgate router``: train, evaluate, compare and calibrate routing classifiers on logged outcomes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from hybridgate.cli_common import fail, need_extra

router_app = typer.Typer(no_args_is_help=True, help="Train, evaluate, compare and calibrate the routing classifier.")

DataOpt = typer.Option(
    ..., "--data", help="CSV file or folder in the RouteLLM format (a prompt column, one True/False column per model); repeatable."
)
WeakOpt = typer.Option(..., "--weak", help="Column of the model that plays the local SLM: once for every --data, or once per --data.")
StrongOpt = typer.Option(..., "--strong", help="Column of the model that plays the cloud LLM: once for every --data, or once per --data.")
TransferOpt = typer.Option(True, "--transfer/--no-transfer", help="Also score the transfer protocol (5 folds of unseen subjects).")
AdaptOpt = typer.Option(True, "--adaptation/--no-adaptation", help="Also score the adaptation curve (N labels of the unseen subjects).")
HeldoutOpt = typer.Option(None, "--heldout", help="A second question set, scored whole by routers trained on --data's train split.")
HeldoutWeakOpt = typer.Option(None, "--heldout-weak", help="The local model's column in --heldout (default: --weak).")
HeldoutStrongOpt = typer.Option(None, "--heldout-strong", help="The cloud model's column in --heldout (default: --strong).")
RouterOpt = typer.Option(None, "--router", help="Router folder or shipped router name (default: pair-blend-mmlu-static, shipped in the package).")
EngineOpt = typer.Option("auto", "--engine", help="Embedding engine: auto, onnx or torch.")
ExcludeOpt = typer.Option([], "--exclude", help="JSONL of prompts to drop (field eval_prompt); contaminated_prompts.jsonl beside the data is read anyway.")
AcrossOpt = typer.Option(
    False, "--across", help="Several sources (one --data per source folder, its pairs known): leave one source out, new traffic "
    "from N labels, in source and new model, beside random, prompt length and the rule scorer (docs/routing.md).",
)
ProtocolOpt = typer.Option(["loso", "in_source", "new_model"], "--protocol", help="With --across: loso, in_source, new_model; repeatable.")
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
    from hybridgate.classifiers.static_vectors import cache_root

    return cache_root() / "embeddings" if enabled else None


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


def _load_data(data: list[Path], weak: list[str] | str, strong: list[str] | str, exclude: list[Path]) -> Any:
    """One or several labelled sets: one --weak/--strong pair for all of them, or one pair per --data."""
    from hybridgate.classifiers.data import concat, load_routing_data

    for f in exclude:
        if not f.is_file():
            fail(f"{f}: no such file")
    weaks = [weak] if isinstance(weak, str) else list(weak)
    strongs = [strong] if isinstance(strong, str) else list(strong)
    if len(weaks) != len(strongs) or len(weaks) not in (1, len(data)):
        fail(f"give --weak and --strong once, or once per --data ({len(data)}); got {len(weaks)} and {len(strongs)}")
    if len(weaks) == 1:
        return load_routing_data(data, weaks[0], strongs[0], exclude=exclude)
    return concat([load_routing_data(d, w, s, exclude=exclude) for d, w, s in zip(data, weaks, strongs, strict=True)])


@router_app.command()
def train(
    data: list[Path] = DataOpt,
    weak: list[str] = WeakOpt,
    strong: list[str] = StrongOpt,
    out: Path = typer.Option(..., "--out", help="Folder to write the router to."),
    head: str = typer.Option(
        "blend", "--head",
        help="blend (the default router's: length + neighbours + gated topic + rules on open requests), prior-correction, group-prior, logistic, mlp or knn.",
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="Head setting NAME=VALUE, repeatable (e.g. -p C=0.5)."),
    features: bool = typer.Option(False, "--features/--no-features", help="Append length, number, math, code and negation features."),
    split: str = typer.Option("train", "--split", help="Rows to train on: train (the benchmark split) or all."),
    name: str | None = typer.Option(None, "--name", help="Router name recorded in the header."),
    embedder: str = typer.Option(
        "all-MiniLM-L6-v2-static",
        "--embedder",
        help="sentence-transformers model name or folder, a folder of static vectors (router distill), "
        "or a -static name (shipped, or distilled once into the cache).",
    ),
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
) -> None:
    """Train a router and save it as arrays + a JSON header; report it on the test split when there is one."""
    need_extra("train", "router train")
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
    weak: list[str] = WeakOpt,
    strong: list[str] = StrongOpt,
    out: Path = typer.Option(..., "--out", help="Folder for scores.csv, report.json and pgr.png (and adaptation.png)."),
    router: str | None = RouterOpt,
    split: str = typer.Option("test", "--split", help="test (the benchmark split) or all (every row, for a held-out set)."),
    transfer: bool = TransferOpt,
    adaptation: bool = AdaptOpt,
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
    across: bool = AcrossOpt,
    protocol: list[str] = ProtocolOpt,
    weak_joules: float | None = typer.Option(None, "--weak-joules", help="Energy of one local answer (J): with --strong-joules, report accuracy per joule."),
    strong_joules: float | None = typer.Option(None, "--strong-joules", help="Energy of one cloud answer (J)."),
) -> None:
    """Score a router on logged outcomes: APGR, CPT(50 %), CPT(80 %), a PNG and per-question scores.

    With --split test on data of five or more subjects, the router's recipe (head, settings, features) is
    also refitted on the transfer protocol's folds and its adaptation curve measured."""
    need_extra("train", "router eval")
    from hybridgate.classifiers.artifact import load_router, read_header, resolve_router
    from hybridgate.classifiers.evaluation import evaluate, write_report
    from hybridgate.classifiers.outcome_head import for_pair
    from hybridgate.classifiers.protocols import Bench, evaluate_recipe, head_recipe

    if split not in ("test", "all"):
        fail("--split must be test or all")
    if (weak_joules is None) != (strong_joules is None) or any(j is not None and j <= 0 for j in (weak_joules, strong_joules)):
        fail("--weak-joules and --strong-joules go together, each a positive number of joules per answer")
    folder = resolve_router(router)
    if across:
        from hybridgate.cli_across import across_report

        with _Errors():
            header = read_header(folder)
            spec = (header.get("head") or {}).get("params") or {}
            if (header.get("head") or {}).get("kind") != "outcomes":
                fail(f"{folder}: --across refits an outcomes router's recipe; this router's head is {header.get('head', {}).get('kind')}")
            om = spec.get("outcome_model") or {}
            across_report(data, out, {k: om[k] for k in ("dim", "l2_w", "l2_v", "l2_eps", "steps", "lr", "seed") if k in om}, protocol, cache, str(header.get("name")))
        return
    with _Errors():
        header = read_header(folder)
        emb = _embedder(_embedder_model(header), engine)
        # A router that scores a pair scores the pair named here: the catalogue's abilities when it knows both names.
        model = for_pair(load_router(folder, embedder=emb.name, dim=emb.dim), weak[0], strong[0])
        every = _load_data(data, weak, strong, exclude)
        rows = every.subset(split)  # type: ignore[arg-type]
        if len(rows) == 0:
            fail(f"no rows in the {split} split")
        vectors = _vectors(emb, rows.prompts, cache, f"embedding {len(rows)} prompts")
        try:
            ev = evaluate(model.name, model.score(vectors, rows.prompts), rows, {"version": model.version, "head": header["head"]})
        except ValueError as e:
            fail(str(e))
        extra: dict[str, Any] = {"router_path": str(folder), "engine": emb.engine}
        if hasattr(model.head, "abilities"):  # a router that scores a pair: which abilities it used
            extra["pair_abilities"] = model.head.abilities()
        if weak_joules is not None and strong_joules is not None:
            from hybridgate.classifiers.metrics import accuracy_per_joule

            extra["intelligence_per_watt"] = accuracy_per_joule(ev.curve, weak_joules, strong_joules)
        bench = Bench(every)
        if split == "test" and bench.has_folds and (transfer or adaptation):
            all_vectors = _vectors(emb, every.prompts, cache, f"embedding {len(every)} prompts for the transfer protocol")
            spec = header["head"]
            recipe = head_recipe(every, all_vectors, spec["kind"], spec.get("params"), embedder=emb.name, features=model.features)
            res = evaluate_recipe(f"{model.name} (refitted)", recipe, bench, transfer=transfer, adaptation=adaptation)
            extra.update({"refitted_in_distribution": res.in_distribution, "transfer": res.transfer, "adaptation": res.adaptation})
        report = write_report(out, ev, rows, split, extra)
    _print_table([ev.row()], f"{model.name} ({model.version}) on {split}: {len(rows)} questions")
    if report.get("transfer"):
        t = report["transfer"]
        typer.echo(f"transfer protocol (recipe refitted per fold): mean APGR {t['mean_apgr']:.3f}; folds " + ", ".join(f"{f['apgr']:.3f}" for f in t["folds"]))
    if report.get("adaptation"):
        typer.echo("adaptation (mean transfer APGR after N labels): " + ", ".join(f"N={k}: {v:.3f}" for k, v in report["adaptation"].items()))
        _plot_adaptation(out / "adaptation.png", [res])
    if report.get("intelligence_per_watt"):
        ipw = report["intelligence_per_watt"]
        i = ipw["share"].index(ipw["best_share"])
        typer.echo(
            f"accuracy per kJ peaks at {ipw['best_share']:.0%} cloud calls: {ipw['accuracy_per_kj'][i]:.3f} "
            f"(all local {ipw['accuracy_per_kj'][0]:.3f}, all cloud {ipw['accuracy_per_kj'][-1]:.3f})"
        )
        _plot_ipw(out / "ipw.png", ipw, model.name)
    typer.echo(f"wrote {out / 'scores.csv'}, {out / 'report.json'} and {out / 'pgr.png'}")


def _plot_ipw(path: Path, ipw: dict[str, Any], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot([100 * c for c in ipw["share"]], ipw["accuracy_per_kj"], label=name)
    ax.set_xlabel("cloud calls (%)")
    ax.set_ylabel("accuracy per kJ")
    ax.set_title(f"intelligence per watt ({ipw['weak_joules']:g} J local, {ipw['strong_joules']:g} J cloud per answer)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _embedder_model(header: dict[str, Any]) -> str:
    return str((header.get("embedder") or {}).get("name") or "all-MiniLM-L6-v2")


def _rule_scores(texts: tuple[str, ...] | list[str]) -> Any:
    """The transparent rule scorer the gateway falls back to, on logged prompts (tokens: words x 4/3)."""
    import numpy as np

    from hybridgate.router import RouteQuery, RuleScorer

    rules = RuleScorer()
    return np.array([rules.score(RouteQuery(t, int(len(t.split()) * 4 / 3), 1)) for t in texts])


def _protocol_table(results: list[Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "never" if v is None else f"{v * 100:.0f} %"

    table = Table(title=title)
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "transfer APGR", "+100 labels", "held-out APGR"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for r in results:
        ind, tr, ad, ho = r.in_distribution, r.transfer, r.adaptation, r.heldout
        table.add_row(
            r.name,
            f"{ind['apgr']:.3f}",
            pct(ind["cpt50"]),
            pct(ind["cpt80"]),
            "—" if tr is None else f"{tr['mean_apgr']:.3f}",
            "—" if not ad else f"{ad.get('100', ad['0']) - ad['0']:+.3f}",
            "—" if ho is None else f"{ho['apgr']:.3f}",
        )
    Console(width=max(160, Console().width)).print(table)


def _plot_adaptation(path: Path, results: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for r in results:
        if not r.adaptation:
            continue
        ns = [k for k in r.adaptation if k != "all"]
        ax.plot([int(k) for k in ns], [r.adaptation[k] for k in ns], marker="o", label=f"{r.name} (all: {r.adaptation['all']:.3f})")
    ax.set_xlabel("labels of the unseen subjects (N)")
    ax.set_ylabel("mean transfer APGR")
    ax.set_title("adaptation to unseen subjects")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@router_app.command()
def compare(
    data: list[Path] = DataOpt,
    weak: list[str] = typer.Option([], "--weak", help="Column of the model that plays the local SLM: once for every --data, or once per --data."),
    strong: list[str] = typer.Option([], "--strong", help="Column of the model that plays the cloud LLM: once for every --data, or once per --data."),
    out: Path | None = typer.Option(None, "--out", help="Folder for compare.json, compare.png and adaptation.png (with --across: across.json, across.png)."),
    across: bool = AcrossOpt,
    protocol: list[str] = ProtocolOpt,
    embedder: list[str] = typer.Option(
        ["all-MiniLM-L6-v2-static", "all-MiniLM-L6-v2"], "--embedder", help="Embedders to compare, repeatable."
    ),
    head: list[str] = typer.Option([], "--head", help="Heads to compare, repeatable (default: every head)."),
    variant: list[str] = typer.Option(
        [], "--variant", help="An extra head setting to compare, HEAD:NAME=VALUE[,NAME=VALUE] (e.g. prior-correction:alpha=0), repeatable."
    ),
    transfer: bool = TransferOpt,
    adaptation: bool = AdaptOpt,
    heldout: Path | None = HeldoutOpt,
    heldout_weak: str | None = HeldoutWeakOpt,
    heldout_strong: str | None = HeldoutStrongOpt,
    engine: str = EngineOpt,
    cache: bool = CacheOpt,
    exclude: list[Path] = ExcludeOpt,
) -> None:
    """Every head (default settings, with and without text features) on every embedder, and every baseline, on
    the in-distribution split, the transfer protocol, the adaptation curve and a held-out question set, in one table.
    With --across: the outcomes router on the across-sources protocols instead."""
    need_extra("train", "router compare")
    if across:
        from hybridgate.cli_across import across_report

        with _Errors():
            across_report(data, out, {}, protocol, cache, "outcomes")  # the settings across-static was chosen with
        return
    if not weak or not strong:
        fail("give --weak and --strong (the two models' columns), or --across for several sources")
    from hybridgate.classifiers.compare import Embedded, compare_heads, default_heads, parse_variant

    kinds = list(head) or default_heads()
    with _Errors():
        try:
            variants = [parse_variant(v) for v in variant]
        except ValueError as exc:
            fail(str(exc))
        rows = _load_data(data, weak, strong, exclude)
        held = None
        if heldout is not None:
            held = _load_data([heldout], heldout_weak or weak[0], heldout_strong or strong[0], [])

        def embedded() -> Iterator[Embedded]:  # one embedder loaded at a time, when its turn comes
            for name in embedder:
                emb = _embedder(name, engine)
                vectors = _vectors(emb, rows.prompts, cache, f"{emb.name}: {len(rows)} prompts")
                hv = None if held is None else _vectors(emb, held.prompts, cache, f"{emb.name}: {len(held)} held-out prompts")
                yield Embedded(emb.name, emb.dim, emb.engine, vectors, hv)

        try:
            comparison = compare_heads(
                rows, embedded(), kinds, variants, rule_scores=_rule_scores, heldout=held, transfer=transfer, adaptation=adaptation
            )
        except ValueError as exc:
            fail(str(exc))
    results = comparison.results
    _protocol_table(results, comparison.title())
    if comparison.subject_prior_apgr is not None:
        typer.echo(f"baseline: subject prior (knows the subject; no transfer): APGR {comparison.subject_prior_apgr:.3f}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(comparison.summary(), indent=2, default=float) + "\n", encoding="utf-8")
        _plot_compare(out / "compare.png", results)
        adapted = comparison.protocols["adaptation"]
        if adapted:
            _plot_adaptation(out / "adaptation.png", [r for r in results if r.adaptation])
        typer.echo(f"wrote {out / 'compare.json'}, {out / 'compare.png'}" + (f" and {out / 'adaptation.png'}" if adapted else ""))


def _plot_compare(path: Path, results: list[Any]) -> None:
    """In-distribution APGR against transfer APGR, one point a router: where the two disagree is the point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for r in results:
        if r.transfer is None:
            continue
        x, y = r.in_distribution["apgr"], r.transfer["mean_apgr"]
        ax.scatter([x], [y], s=18, color="tab:red" if r.name.startswith("baseline") else "tab:blue")
        ax.annotate(r.name.replace("all-MiniLM-L6-v2", "MiniLM"), (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.axhline(0.5, color="lightgrey", linewidth=0.8)
    ax.set_xlabel("in-distribution APGR (test split)")
    ax.set_ylabel("transfer APGR (mean of 5 folds of unseen subjects)")
    ax.set_title("what a router learnt: the benchmark or the queries")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@router_app.command("train-across")
def train_across(
    data: list[Path] = typer.Option(..., "--data", help="A source folder (routellm-mmlu, mmlu-pro, alpacaeval, llmrouter); repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder to write the router to."),
    name: str = typer.Option("across-static", "--name", help="The router's name."),
    slice_out: Path | None = typer.Option(None, "--slice", help="Write a frozen slice of llmrouter's test split here and claim its APGR in the header."),
    cache: bool = CacheOpt,
) -> None:
    """Build the outcomes router: settings chosen on the train splits alone, fitted on every source's train split."""
    need_extra("train", "router train-across")
    from hybridgate.cli_across import train_across_cmd

    with _Errors():
        train_across_cmd(data, out, name, cache, slice_out)


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
    typer.echo(f"router:\n  threshold: {t_cloud:.6f}\n  t_local: {t_local:.6f}")
    if gray_share > 0:
        typer.echo(f"  # scores in [{t_local:.6f}, {t_cloud:.6f}) form the gray band ({gray_share:.0%} of queries), answered collaboratively")


@router_app.command()
def distill(
    model: str = typer.Argument("all-MiniLM-L6-v2", help="sentence-transformers model name or folder to distil."),
    out: Path = typer.Option(..., "--out", help="Folder to write the static vectors to (model2vec's layout)."),
    dims: int | None = typer.Option(None, "--dims", help="Keep this many principal components (default: all)."),
    dtype: str = typer.Option("float16", "--dtype", help="float16, float32 or int8."),
    engine: str = EngineOpt,
) -> None:
    """Distil a transformer into static word-piece vectors: what the default router reads, served without torch."""
    need_extra("train", "router distill")
    from hybridgate.classifiers.embedder import model_name, resolve_model_path
    from hybridgate.classifiers.static_vectors import distil_static, static_name

    if dtype not in ("float16", "float32", "int8"):
        fail(f"--dtype must be float16, float32 or int8, not {dtype!r}")
    with _Errors():
        path = resolve_model_path(model)
        name = static_name(model_name(model, path), dims, dtype)  # type: ignore[arg-type]
        folder = distil_static(_embedder(model, engine), path / "tokenizer.json", out, name=name, dims=dims, dtype=dtype)  # type: ignore[arg-type]
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    typer.echo(f"static vectors {name} written to {folder} ({size / 2**20:.1f} MiB); use --embedder {folder} to train a router on them")
