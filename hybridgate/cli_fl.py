"""``hybridgate fl``: federated training of the router with Flower."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import typer

from hybridgate.cli_common import fail, need_extra
from hybridgate.federated.defaults import BENCHMARK, DEFAULTS

fl_app = typer.Typer(no_args_is_help=True, help="Federated learning of the router with Flower: no query leaves a device.")


@fl_app.command()
def simulate(
    data: list[Path] = typer.Option(..., "--data", help="RouteLLM-format CSV folder (train split is federated, test split scores)."),
    weak: str = typer.Option(..., "--weak"),
    strong: str = typer.Option(..., "--strong"),
    out: Path = typer.Option(..., "--out", help="Folder for simulate.json and apgr_rounds.png."),
    partition: str = typer.Option(BENCHMARK.partition, "--partition", help="by-subject or iid."),
    gateways: int = typer.Option(BENCHMARK.gateways, "--gateways", min=2),
    rounds: int = typer.Option(BENCHMARK.rounds, "--rounds", min=1),
    local_epochs: int = typer.Option(BENCHMARK.local_epochs, "--local-epochs", min=1),
    lr: float = typer.Option(BENCHMARK.lr, "--lr"),
    attack_share: float = typer.Option(BENCHMARK.attack_share, "--attack", help="Share of poisoned gateways for the attack rows (0: skip them)."),
    relative_norm: float = typer.Option(
        BENCHMARK.relative_norm, "--relative-norm", min=0.0,
        help="The robust rows refuse updates over this many times the round's median update, before the trimmed mean (0: no filter).",
    ),
    embedder: str = typer.Option(DEFAULTS.embedder, "--embedder"),
    publish: Path | None = typer.Option(
        None, "--publish", help="Write the shipped router with the FedAvg correction here (gateways with router.watch_s pick it up)."
    ),
    dp_noise: float = typer.Option(BENCHMARK.dp_noise, "--dp-noise", help="Noise multiplier of the DP row (0: skip it)."),
    dp_clip: float = typer.Option(BENCHMARK.dp_clip, "--dp-clip", help="Clipping norm of each gateway's update in the DP row."),
    dp_split: int = typer.Option(
        BENCHMARK.dp_split, "--dp-split", min=1, help="The DP row splits each gateway into this many (user-level DP: more gateways, less noise each)."
    ),
    dp_rounds: int = typer.Option(BENCHMARK.dp_rounds, "--dp-rounds", min=1, help="Rounds of the DP row (fewer rounds, less privacy spent)."),
    dp_local_epochs: int = typer.Option(BENCHMARK.dp_local_epochs, "--dp-local-epochs", min=1),
    personal_epochs: int = typer.Option(BENCHMARK.personal_epochs, "--personal-epochs", help="Local steps of the personalized row."),
    fleet_labels: int = typer.Option(
        BENCHMARK.fleet_labels, "--fleet-labels", min=0,
        help="Labels per gateway in the fleet-adaptation rows (traffic of subjects the shipped router never saw; 0: skip them).",
    ),
    secure_rows: bool = typer.Option(
        BENCHMARK.secure_rows, "--secure-rows/--no-secure-rows",
        help="The secure aggregation rows (SecAgg+; with client-side clipping and DP; under attack): needs at least 4 gateways.",
    ),
) -> None:
    """The federated benchmark of the router that ships: its correction by the fleet's labels, central, federated
    (FedAvg, FedProx, DP), each gateway alone, under two attacks (FedAvg, trimmed mean behind a norm filter),
    personalized, and on subjects the router never saw (fleet adaptation)."""
    need_extra("fl", "fl simulate")
    from rich.console import Console

    from hybridgate.classifiers.data import DataError, load_routing_data
    from hybridgate.classifiers.embedder import EmbedderError, load_embedder
    from hybridgate.classifiers.static_vectors import cache_root
    from hybridgate.federated.defaults import BenchmarkSettings
    from hybridgate.federated.experiment import simulate_benchmark

    settings = BenchmarkSettings(
        partition=partition, gateways=gateways, rounds=rounds, local_epochs=local_epochs, lr=lr,
        attack_share=attack_share, relative_norm=relative_norm, dp_noise=dp_noise, dp_clip=dp_clip, dp_split=dp_split,
        dp_rounds=dp_rounds, dp_local_epochs=dp_local_epochs, personal_epochs=personal_epochs, fleet_labels=fleet_labels,
        secure_rows=secure_rows,
    )
    try:
        settings.check()
    except ValueError as exc:
        fail(str(exc))
    quiet_flower()
    try:
        rows = load_routing_data(data, weak, strong)
        emb = load_embedder(embedder, threads=os.cpu_count() or 1)
    except (DataError, EmbedderError) as exc:
        fail(str(exc))
    console = Console(width=150)
    try:
        result = simulate_benchmark(rows, emb, cache_root() / "embeddings", settings, console.print, publish_to=publish)
    except ValueError as exc:
        fail(str(exc))
    _print_table(console, f"{partition} partition, {gateways} gateways, {result.n_train} train / {result.n_test} test questions", result.rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    _plot(out / "apgr_rounds.png", result.curves, result.rows, partition)
    typer.echo(f"wrote {out / 'simulate.json'} and {out / 'apgr_rounds.png'}")


def quiet_flower() -> None:
    """Flower's and Ray's notices (deprecations, telemetry, their INFO lines) stay off the terminal, so the table a
    run prints is not buried under them; this package's own warnings (a refused update) still show."""
    import warnings

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _print_table(console: Any, title: str, results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "rounds", "bytes/gateway/round", "measured", "s/round", "dropouts", "wall"):
        table.add_column(col, justify="left" if col == "router" else "right")

    def pct(v: float) -> str:
        return "—" if v != v else f"{v * 100:.0f} %"

    for name, r in results.items():
        apgr = f"{r['apgr']:.3f}" + (f" (worst {r['apgr_worst']:.3f})" if "apgr_worst" in r else "")
        apgr += f" (ε {r['epsilon']:.1f})" if "epsilon" in r else ""
        apgr += f" (global {r['apgr_global_same_questions']:.3f})" if "apgr_global_same_questions" in r else ""
        table.add_row(
            name, apgr, pct(r["cpt50"]), pct(r["cpt80"]), str(r["rounds"]),
            str(r["bytes_per_gateway_round"]), str(r.get("measured_bytes_per_gateway_round", "—")),
            f"{r['seconds_per_round']:.2f}" if "seconds_per_round" in r else "—", str(r.get("dropouts_survived", "—")),
            f"{r.get('wall_s', 0):.0f} s",
        )
    console.print(table)


def _plot(path: Path, curves: dict[str, list[float]], results: dict[str, Any], partition: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name)
    ax.axhline(results["shipped"]["apgr"], color="black", linestyle="-.", label="shipped router")
    ax.axhline(results["central"]["apgr"], color="black", linestyle="--", label="central")
    ax.axhline(results["local_only"]["apgr"], color="grey", linestyle=":", label="local-only (mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("APGR on the test split")
    ax.set_title(f"the fleet's correction of the shipped router, {partition} partition")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_app(folder: Path) -> Path:
    """The Flower app folder ``flwr run`` submits: configuration only, the code is the installed package."""
    folder.mkdir(parents=True, exist_ok=True)
    from hybridgate.federated.defaults import app_pyproject

    (folder / "pyproject.toml").write_text(app_pyproject(), encoding="utf-8")
    (folder / "README.md").write_text("Written by `hybridgate fl server`.\n", encoding="utf-8")
    return folder


def _flower_env() -> dict[str, str]:
    """Flower starts helper processes by name (flower-superexec): they must be found beside this interpreter."""
    import sys

    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "FLWR_TELEMETRY_ENABLED": "0"}


def _bin(name: str) -> str:
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        fail(f"{name} not found: install flwr in this environment")
    return found


@fl_app.command()
def server(
    publish: Path = typer.Option(..., "--publish", help="Folder the new global router is written to (gateways watch it)."),
    base_router: str | None = typer.Option(
        None, "--base-router",
        help="The router the gateways run now, which the fleet's correction goes on top of: a folder or a shipped name "
        "(default: the router already in --publish, else the shipped default).",
    ),
    rounds: int = typer.Option(DEFAULTS.rounds, "--rounds", min=1),
    min_clients: int = typer.Option(DEFAULTS.min_clients, "--min-clients", min=1, help="Gateways that must be connected before a round starts."),
    strategy: str = typer.Option(DEFAULTS.strategy, "--strategy", help="fedavg, fedprox, trimmed-mean or multikrum."),
    local_epochs: int = typer.Option(DEFAULTS.local_epochs, "--local-epochs", min=1),
    relative_norm: float = typer.Option(
        DEFAULTS.relative_norm, "--relative-norm", min=0.0,
        help="Refuse an update that moves the model more than this many times the round's median update (0: off; 3 is a good value).",
    ),
    node_weights_min_answers: int = typer.Option(
        DEFAULTS.node_weights_min_answers, "--node-weights-min-answers", min=0, help="A gateway's node weights count in the fleet's once learnt from this many answers."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the SuperLink listens on (its one HTTP API for gateways and runs)."),
    port: int = typer.Option(9091, "--port"),
    dp_noise: float = typer.Option(
        DEFAULTS.dp_noise, "--dp-noise", min=0.0,
        help="User-level differential privacy: Gaussian noise of this multiple of --dp-clip on the average (0: off; fedavg only).",
    ),
    dp_clip: float = typer.Option(DEFAULTS.dp_clip, "--dp-clip", min=0.0, help="Each gateway's update is clipped to this norm under --dp-noise."),
    tls_dir: Path | None = typer.Option(
        None, "--tls-dir", help="Serve TLS: a folder with ca.crt, server.pem and server.key (a certificate for the address gateways dial)."
    ),
    supernode_keys: list[Path] = typer.Option(
        [], "--supernode-key",
        help="Only gateways whose key is registered may join (Flower's SuperNode authentication; needs --tls-dir): "
        "the public key (OpenSSH, ECDSA) of one; repeat for each.",
    ),
    secure_agg: bool = typer.Option(
        DEFAULTS.secure_agg, "--secure-agg/--no-secure-agg",
        help="Secure aggregation (Flower's SecAgg+): the server sees only the sum of each round's updates, never one gateway's; "
        "needs --min-clients of at least 4 and fedavg or fedprox. Off: gateways must be started with --allow-plain.",
    ),
    local_model: str = typer.Option(
        DEFAULTS.local_model, "--local-model",
        help="The gateways' local model, as they name it (router.local_model; empty: none set). With an outcomes router that does not "
        "know it, the fleet fits its ability from every gateway's labels (SecAgg+ only) and publishes it with the router.",
    ),
    ability_rounds: int = typer.Option(
        DEFAULTS.ability_rounds, "--ability-rounds", min=0, max=20, help="Rounds of the local model's ability, at least 2 (0: not shared)."
    ),
    timeout: float = typer.Option(1800, "--timeout", help="Seconds to wait for the run."),
) -> None:
    """Start a SuperLink, run the federated training on the connected gateways, publish the router, stop.

    Without --tls-dir it speaks plain-text gRPC: for loopback or a trusted network only.
    """
    need_extra("fl", "fl server")
    import subprocess
    import tempfile

    from hybridgate.classifiers.artifact import ArtifactError, load_router, resolve_router
    from hybridgate.federated.strategy import STRATEGIES

    if strategy not in STRATEGIES:
        fail(f"--strategy must be one of {', '.join(STRATEGIES)}")
    if 0 < relative_norm <= 1:
        fail("--relative-norm is a multiple of the round's median update: above 1 (or 0 for off)")
    if ability_rounds == 1:
        fail("--ability-rounds: 0 (off) or at least 2 (each round judges the step before it; the first only the prior)")
    if '"' in local_model or "\\" in local_model:
        fail("--local-model is a model's name: no quotes or backslashes")
    if dp_noise > 0 and (strategy != "fedavg" or dp_clip <= 0):
        fail("--dp-noise needs --strategy fedavg (Flower's accountant requires it) and a positive --dp-clip")
    if secure_agg:
        from hybridgate.federated.secure import MIN_SECURE_COHORT, SecureRefused, protocol_shape
        from hybridgate.federated.strategy import SECURE_STRATEGIES

        if strategy not in SECURE_STRATEGIES:
            fail(f"--strategy {strategy} must see each update, which secure aggregation hides: use fedavg or fedprox, or --no-secure-agg")
        if relative_norm > 0:
            fail("--relative-norm compares each update with the others, which secure aggregation hides: drop it or use --no-secure-agg")
        try:
            protocol_shape(min_clients)
        except SecureRefused as exc:
            fail(f"--min-clients {min_clients}: {exc} (at least {MIN_SECURE_COHORT}, or --no-secure-agg)")
    base_path = resolve_router(base_router if base_router else (publish if (publish / "router.json").is_file() else None)).resolve()
    try:
        base = load_router(base_path)
    except ArtifactError as exc:
        fail(f"--base-router: {exc}")
    security, connection = _superlink_security(tls_dir, supernode_keys)
    env = _flower_env()
    with tempfile.TemporaryDirectory(prefix="hybridgate-flwr-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env["FLWR_HOME"] = str(home)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "hybridgate"\n\n[superlink.hybridgate]\naddress = "127.0.0.1:{port}"\n{connection}\n', encoding="utf-8"
        )
        app_dir = write_app(Path(tmp) / "app")
        link = subprocess.Popen(
            [_bin("flower-superlink"), *security, "--disable-runtime-dependency-installation",
             "--host", host, "--port", str(port),
             "--database", str(Path(tmp) / "state.db")],
            env=env,
        )
        try:
            _wait_for_port("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, link)
            for key in supernode_keys:
                registered = subprocess.run(
                    [_bin("flwr"), "supernode", "register", str(key.resolve()), "hybridgate"], env=env, capture_output=True, text=True, check=False
                )
                if registered.returncode != 0:
                    fail(f"{key}: not registered with the SuperLink: {(registered.stdout + registered.stderr).strip()[-300:]}")
            run_config = (
                f'num-server-rounds={rounds} strategy="{strategy}" local-epochs={local_epochs} min-clients={min_clients} '
                f'publish-dir="{publish.resolve()}" node-weights-min-answers={node_weights_min_answers} '
                f'base-router="{base_path}" base-version="{base.version}" embedder="{base.embedder}" relative-norm={relative_norm} '
                f'dp-noise={dp_noise} dp-clip={dp_clip} secure-agg={"true" if secure_agg else "false"} '
                f'local-model="{local_model}" ability-rounds={ability_rounds}'
            )
            typer.echo(
                f"SuperLink on {host}:{port}; waiting for {min_clients} gateways, then {rounds} rounds of a correction "
                f"on top of {base.name}@{base.version}" + (f" and up to {ability_rounds} of the local model's ability" if secure_agg and ability_rounds else ""),
                err=True,
            )
            done = subprocess.run(
                [_bin("flwr"), "run", str(app_dir), "hybridgate", "--run-config", run_config, "--stream"],
                env=env, timeout=timeout, check=False,
            )
            if done.returncode != 0:
                fail(f"flwr run exited with code {done.returncode}")
        finally:
            link.terminate()
            try:
                link.wait(timeout=10)
            except subprocess.TimeoutExpired:
                link.kill()
    if not (publish / "router.json").is_file():
        fail(f"the run ended without publishing a router to {publish}")
    typer.echo(f"published {publish / 'router.json'}")


TLS_FILES = ("ca.crt", "server.pem", "server.key")


def _wait_for_port(host: str, port: int, link: Any, limit_s: float = 60.0) -> None:
    """Until the SuperLink accepts connections (a fixed pause was too short on a busy machine), or it exits."""
    import socket
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if link.poll() is not None:
            fail(f"the SuperLink exited with code {link.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                time.sleep(0.5)  # its other APIs come up alongside
                return
        except OSError:
            time.sleep(0.2)
    fail(f"the SuperLink did not listen on {host}:{port} within {limit_s:.0f} s")


def _superlink_security(tls_dir: Path | None, supernode_keys: list[Path]) -> tuple[list[str], str]:
    """The SuperLink's TLS and authentication flags, and the matching connection line of the CLI's config."""
    if tls_dir is None:
        if supernode_keys:
            fail("--supernode-key needs --tls-dir: Flower authenticates SuperNodes only over TLS")
        return ["--insecure"], "insecure = true"
    missing = [name for name in TLS_FILES if not (tls_dir / name).is_file()]
    if missing:
        fail(f"--tls-dir {tls_dir}: missing {', '.join(missing)}")
    for key in supernode_keys:
        if not key.is_file():
            fail(f"--supernode-key {key}: no such file")
    ca, cert, key_file = ((tls_dir / name).resolve() for name in TLS_FILES)
    flags = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key_file)]
    if supernode_keys:
        flags.append("--enable-supernode-auth")
    return flags, f'root-certificates = "{ca}"'


@fl_app.command()
def client(
    superlink: str = typer.Option("127.0.0.1:9091", "--superlink", help="The SuperLink's address (host:port)."),
    gateway_url: str = typer.Option("http://127.0.0.1:8080", "--gateway-url", help="This device's gateway (its labels stay here)."),
    api_key_file: Path | None = typer.Option(
        None, "--api-key-file", help="A file holding a key of that gateway, if it has keys (or set HYBRIDGATE_API_KEY)."
    ),
    labels_file: Path | None = typer.Option(
        None, "--labels-file", help="Train on an exported .npz instead (x, label, base_score, router_version: one row per label)."
    ),
    node_weights_file: Path | None = typer.Option(
        None, "--node-weights-file", help="Send the node-choice weights saved from GET /v1/hybridgate/nodes (with --labels-file)."
    ),
    port: int = typer.Option(9094, "--port", help="Port of this SuperNode's runtime API on 127.0.0.1 (one per node)."),
    root_certificates: Path | None = typer.Option(
        None, "--root-certificates", help="Speak TLS to the SuperLink, trusting this CA certificate (the server's ca.crt)."
    ),
    auth_key: Path | None = typer.Option(
        None, "--auth-key", help="This gateway's private key (OpenSSH, ECDSA) for a SuperLink that authenticates SuperNodes; needs --root-certificates."
    ),
    retry_s: float = typer.Option(
        300.0, "--retry-s", min=1.0,
        help="Seconds to keep trying to reach the SuperLink (before it starts, or after it stops) before giving up with one line.",
    ),
    allow_plain: bool = typer.Option(
        False, "--allow-plain",
        help="Also answer a server that runs without secure aggregation (fl server --no-secure-agg): it then sees this gateway's own update.",
    ),
) -> None:
    """Join a federation as this device's SuperNode: trains on this gateway's labels, sends only weights."""
    need_extra("fl", "fl client")
    security = ["--insecure"]
    if root_certificates is not None:
        if not root_certificates.is_file():
            fail(f"--root-certificates {root_certificates}: no such file")
        security = ["--root-certificates", str(root_certificates.resolve())]
    if auth_key is not None:
        if root_certificates is None:
            fail("--auth-key needs --root-certificates: Flower authenticates SuperNodes only over TLS")
        if not auth_key.is_file():
            fail(f"--auth-key {auth_key}: no such file")
        security += ["--auth-supernode-private-key", str(auth_key.resolve())]
    if labels_file is not None:
        from hybridgate.federated.deploy import labels_file as read_labels

        try:
            read_labels(labels_file)
        except ValueError as exc:
            fail(str(exc))
    node_config = f'labels-file="{labels_file.resolve()}"' if labels_file else f'gateway-url="{gateway_url}"'
    # The key never goes on the SuperNode's command line (every local user can read it there): it stays in this
    # process's environment, which the SuperNode and its ClientApp inherit, or in a file named here.
    if api_key_file is not None:
        if not api_key_file.is_file():
            fail(f"{api_key_file}: no such file")
        node_config += f' api-key-file="{api_key_file.resolve()}"'
    if node_weights_file is not None:
        if not node_weights_file.is_file():
            fail(f"{node_weights_file}: no such file")
        node_config += f' node-weights-file="{node_weights_file.resolve()}"'
    if allow_plain:
        node_config += " allow-plain=true"
    cmd = [_bin("flower-supernode"), *security, "--superlink", superlink, "--node-config", node_config, "--port", str(port),
           "--max-wait-time", str(retry_s)]
    _run_supernode(cmd, superlink, retry_s)


GAVE_UP = "Giving up reconnection"  # the SuperNode's line when --max-wait-time has passed without the SuperLink


def _run_supernode(cmd: list[str], superlink: str, retry_s: float) -> None:
    """Run the SuperNode, its output relayed, until it stops. When the SuperLink is gone for ``retry_s`` (the
    federation is over and its server stopped, or it never came up), Flower's multi-line exit report is replaced by
    one line. SIGINT and SIGTERM are passed on, so stopping this command stops the SuperNode."""
    import signal
    import subprocess
    import sys
    import threading

    child = subprocess.Popen(cmd, env={**_flower_env(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    gave_up = threading.Event()

    def relay() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if GAVE_UP in line:
                gave_up.set()
            if not gave_up.is_set():
                sys.stderr.write(line)
                sys.stderr.flush()

    # A thread, not a loop to the pipe's end: the SuperExec the SuperNode started keeps the pipe open a while after
    # the SuperNode itself has exited.
    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = child.wait()
    reader.join(timeout=2.0)
    if gave_up.is_set():
        fail(f"the SuperLink at {superlink} did not answer for {retry_s:.0f} s: the federation is over or its server is gone; stopping", 1)
    if code != 0:
        raise typer.Exit(code)


@fl_app.command("export-labels")
def export_labels(
    out: Path = typer.Option(..., "--out", help="The .npz to write (x, label, base_score, router_version): what fl client --labels-file reads."),
    gateway_url: str = typer.Option("http://127.0.0.1:8080", "--gateway-url", help="This device's gateway."),
    api_key_file: Path | None = typer.Option(
        None, "--api-key-file", help="A file holding a key of that gateway, if it has keys (or set HYBRIDGATE_API_KEY)."
    ),
) -> None:
    """Save this gateway's labels (query vectors and outcomes, never text) for a SuperNode that cannot reach it."""
    import httpx

    from hybridgate.federated.deploy import from_gateway

    cfg: dict[str, str] = {"gateway-url": gateway_url}
    if api_key_file is not None:
        if not api_key_file.is_file():
            fail(f"{api_key_file}: no such file")
        cfg["api-key-file"] = str(api_key_file)
    try:
        body = from_gateway(cfg, "/v1/hybridgate/labels", limit=10_000)
    except (httpx.HTTPError, ValueError) as exc:
        fail(f"{gateway_url}: no labels read ({exc})")
    if not isinstance(body, dict) or "data" not in body:
        reason = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
        fail(f"{gateway_url} refused: {reason}")
    rows = [
        r for r in body["data"]
        if isinstance(r.get("base_score"), (int, float)) and r.get("router_version") and r.get("label") in (0, 1) and isinstance(r.get("vector"), list)
    ]
    if not rows:
        fail(f"{gateway_url} holds no labels with the router's score yet ({len(body['data'])} labels in all)")
    embedders = {str(r.get("embedder")) for r in rows}
    if len(embedders) != 1 or len({len(r["vector"]) for r in rows}) != 1:
        fail(f"{gateway_url}: labels from more than one embedder ({', '.join(sorted(embedders))}); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        x=np.asarray([r["vector"] for r in rows], dtype=np.float32),
        label=np.asarray([r["label"] for r in rows], dtype=np.int8),
        base_score=np.asarray([r["base_score"] for r in rows], dtype=np.float64),
        router_version=np.asarray([str(r["router_version"]) for r in rows]),
    )
    versions = sorted({str(r["router_version"]) for r in rows})
    typer.echo(f"wrote {len(rows)} labels ({len(body['data']) - len(rows)} without the router's score left out; router versions {', '.join(versions)}) to {out}")
