"""The ``hybridgate`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer

from hybridgate.cli_common import fail as _fail
from hybridgate.cli_fl import fl_app
from hybridgate.cli_router import router_app
from hybridgate.cli_top import top

app = typer.Typer(add_completion=False, no_args_is_help=True, help="An on-device LLM gateway: local SLM, cloud LLM, or both.")
app.add_typer(router_app, name="router")
app.add_typer(fl_app, name="fl")
app.command()(top)


def _load(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from hybridgate.serving.config import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML configuration file (default: the embedded defaults).")


@app.command()
def serve(
    config: Path | None = ConfigOpt,
    host: str | None = typer.Option(None, help="Address to bind (default from the config: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to bind (default from the config: 8080)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback address without API keys."),
    standin: bool = typer.Option(True, "--standin/--no-standin", help="Start the loopback cloud stand-in if the config asks for it."),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, help="Gateway processes on the port, sharing one local model; > 1 needs Redis (docs/workers.md)."
    ),
) -> None:
    """Run the gateway."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    cfg = _load(config, {"server": server} if server else None)
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hybridgate.serving.app import is_loopback

    if not is_loopback(cfg.server.host) and not cfg.server.api_keys and not insecure:
        _fail(f"refusing to listen on {cfg.server.host} without API keys; set server.api_keys or pass --insecure")
    from hybridgate.serving.workers import needs_redis, run_workers

    if why := needs_redis(cfg, workers):
        _fail(why)

    import uvicorn

    from hybridgate.serving.app import create_app
    from hybridgate.serving.build import build_gateway
    from hybridgate.serving.standin import STANDIN_NAME, Standin

    helper = None
    if standin and cfg.standin.enabled and cfg.cloud is not None and not cfg.cloud.api_base:
        helper = Standin(cfg.standin)
        typer.echo(f"starting the cloud stand-in on 127.0.0.1:{helper.port} (no cloud credentials configured)", err=True)
        cfg.cloud.api_base = helper.launch()  # it loads its model while this process loads the gateway's
        cfg.cloud.model = f"openai/{STANDIN_NAME}"
    try:
        if workers > 1:
            try:
                run_workers(cfg, workers, before_serving=helper.wait_ready if helper is not None else None)
            except (FileNotFoundError, ValueError, RuntimeError) as exc:
                _fail(str(exc))
            return
        from hybridgate.serving.cpu import one_blas_thread

        one_blas_thread()
        try:
            gateway = build_gateway(cfg)
            if helper is not None:
                helper.wait_ready()
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            _fail(str(exc))
        web = create_app(cfg, lambda: gateway)
        uvicorn.run(web, host=cfg.server.host, port=cfg.server.port, log_level=cfg.server.log_level, access_log=False)
    finally:
        if helper is not None:
            helper.stop()


@app.command()
def models(config: Path | None = ConfigOpt) -> None:
    """List the backends a configuration defines, without loading any model."""
    from rich.console import Console
    from rich.table import Table

    from hybridgate.serving.backends.local_llama import default_model_path
    from hybridgate.serving.backends.providers import resolve_wire
    from hybridgate.serving.config import RemoteConfig
    from hybridgate.serving.gateway import ALIASES

    cfg = _load(config)
    table = Table("model name", "route", "kind", "model")
    try:
        local_path = cfg.local.model_path or str(default_model_path())
    except FileNotFoundError as exc:
        local_path = f"(missing: {exc})"
    table.add_row(cfg.local.name, "local", "llama_cpp (in process)", local_path)
    def kind(node: RemoteConfig, api_base: str | None) -> str:
        try:
            wire = resolve_wire(node.model, api_base, node.transport, node.api_key_env)
        except ValueError as exc:
            return f"(misconfigured: {exc})"
        return f"{wire.transport} ({wire.provider})"

    for node in cfg.edge_nodes:
        table.add_row(node.name, node.route, kind(node, node.api_base), f"{node.model} @ {node.api_base}")
    if cfg.cloud is not None:
        standin = cfg.cloud.api_base is None and cfg.standin.enabled
        where = cfg.cloud.api_base or ("loopback stand-in" if standin else "provider default")
        base = "http://127.0.0.1/v1" if standin else cfg.cloud.api_base
        table.add_row(cfg.cloud.name, "cloud", kind(cfg.cloud, base), f"{cfg.cloud.model} @ {where}")
    for alias in ALIASES:  # the same list GET /v1/models answers with
        what = alias.split("/", 1)[1]
        table.add_row(alias, "router" if what == "auto" else what if what in ("local", "cloud") else "collaborative", "alias", "")
    Console().print(table)


@app.command()
def version() -> None:
    """Print the version."""
    from hybridgate import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - the console script calls app()
    app()


if __name__ == "__main__":
    sys.exit(app())
