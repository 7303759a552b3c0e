"""The federation's defaults have one source (``federated/defaults.py``): ``fl server``'s options, the Flower app's
run config, the ServerApp's reading of a run config and the plan all agree with it."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import typer

from hybridgate.cli_fl import fl_app, write_app
from hybridgate.federated.apps import ServerPlan
from hybridgate.federated.checks import checked_train_request
from hybridgate.federated.defaults import DEFAULTS, RUN_CONFIG_KEYS, FederationDefaults
from hybridgate.federated.deploy import plan_from_run_config


def test_the_app_that_fl_server_submits_carries_the_defaults(tmp_path: Path) -> None:
    config = tomllib.loads((write_app(tmp_path / "app") / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert {key: config[key] for key in RUN_CONFIG_KEYS} == {key: getattr(DEFAULTS, name) for key, name in RUN_CONFIG_KEYS.items()}
    assert config["publish-dir"] == config["base-router"] == ""
    assert set(RUN_CONFIG_KEYS.values()) <= {f.name for f in fields(FederationDefaults)}


def test_fl_server_options_default_to_the_same_values() -> None:
    server = typer.main.get_command(fl_app).commands["server"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in server.params}
    for name in ("rounds", "min_clients", "strategy", "local_epochs", "relative_norm", "node_weights_min_answers", "dp_noise", "dp_clip"):
        assert defaults[name] == getattr(DEFAULTS, name), name
    assert defaults["secure_agg"] == DEFAULTS.secure_agg


def test_the_server_app_and_the_plan_read_the_same_values() -> None:
    start = np.zeros(4, dtype=np.float32)
    empty = plan_from_run_config({}, start)  # a run config without a key takes the default
    written = plan_from_run_config(tomllib.loads(_app_toml())["tool"]["flwr"]["app"]["config"], start)
    bare = ServerPlan()
    for plan in (empty, written):
        assert (plan.rounds, plan.local_epochs, plan.dp_clip, plan.secure) == (DEFAULTS.rounds, DEFAULTS.local_epochs, DEFAULTS.dp_clip, DEFAULTS.secure_agg)
        assert plan.expected_clients == DEFAULTS.min_clients and plan.relative_norm is None
    for name in ("strategy", "rounds", "local_epochs", "lr", "proximal_mu", "trim_beta", "max_update_norm", "dp_noise", "dp_clip", "dp_delta"):
        assert getattr(empty, name) == getattr(written, name) == getattr(bare, name) == getattr(DEFAULTS, name), name
    # A gateway asked to train without the settings trains as the server would have asked.
    assert checked_train_request({}, np.zeros(5), 4)[:2] == (DEFAULTS.local_epochs, DEFAULTS.lr)


def _app_toml() -> str:
    from hybridgate.federated.defaults import app_pyproject

    return app_pyproject()
