"""The federation's defaults, in one place: ``fl server``'s options, the Flower app's run config, the ServerApp's
reading of it, and :class:`~hybridgate.federated.apps.ServerPlan` all read them from here.

They were four copies that had drifted (3 rounds in one, 10 in another; a clipping norm of 1.0 and of 0.5), so a
run's settings depended on which path it took. A deployed run is short (3 rounds of 5 local epochs): gateways train
on their own CPUs between requests; ``fl simulate``'s benchmark settings are its own, chosen for the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FederationDefaults:
    """What a federation does when nobody says otherwise."""

    strategy: str = "fedavg"
    rounds: int = 3
    local_epochs: int = 5
    lr: float = 0.5
    proximal_mu: float = 0.1  # FedProx's proximal term, when the strategy is fedprox
    trim_beta: float = 0.2  # the share trimmed at each end by trimmed-mean
    max_update_norm: float = 10.0
    min_clients: int = 2
    embedder: str = "all-MiniLM-L6-v2-static"
    router_name: str = "federated"
    node_weights_min_answers: int = 20
    relative_norm: float = 0.0  # 0: no filter on the round's median update
    dp_noise: float = 0.0  # 0: no differential privacy
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    secure_agg: bool = True
    # The fleet's local model, by the name its gateways give it (router.local_model; "" for none set: "local"), and the
    # Newton rounds of its ability (0: not shared). Only an outcomes router not knowing the model learns it.
    local_model: str = ""
    ability_rounds: int = 8


DEFAULTS = FederationDefaults()


@dataclass(frozen=True)
class BenchmarkSettings:
    """``fl simulate``'s benchmark (``experiment.py``): its own settings, chosen for the table, not a deployment's."""

    partition: str = "by-subject"  # or iid
    gateways: int = 20
    rounds: int = 30
    local_epochs: int = 5
    lr: float = DEFAULTS.lr
    attack_share: float = 0.2  # share of poisoned gateways in the attack rows (0: skip them)
    relative_norm: float = 3.0  # the robust rows' filter, a multiple of the round's median update (0: none)
    dp_noise: float = 2.2  # the DP rows' noise multiplier (0: skip them)
    dp_clip: float = DEFAULTS.dp_clip
    dp_split: int = 5  # the DP rows split each gateway into this many (user-level DP)
    dp_rounds: int = 10
    dp_local_epochs: int = 20
    personal_epochs: int = 20
    fleet_labels: int = 15  # labels per gateway of the fleet-adaptation rows (0: skip them)
    secure_rows: bool = True

    def check(self) -> None:
        """A ValueError that says which setting cannot run, before anything is fitted."""
        from hybridgate.federated.secure import MIN_SECURE_COHORT

        if self.partition not in ("by-subject", "iid"):
            raise ValueError("--partition must be by-subject or iid")
        if not 0.0 <= self.attack_share < 0.5:
            raise ValueError("--attack is a share of gateways in [0, 0.5)")
        if 0 < self.relative_norm <= 1:
            raise ValueError("--relative-norm is a multiple of the round's median update: above 1 (or 0 for no filter)")
        if self.secure_rows and self.gateways < MIN_SECURE_COHORT:
            raise ValueError(f"the secure rows need at least {MIN_SECURE_COHORT} gateways (--gateways), or --no-secure-rows")


BENCHMARK = BenchmarkSettings()

# The Flower app's run-config keys (``[tool.flwr.app.config]``, ``flwr run --run-config``) and the field each one is.
RUN_CONFIG_KEYS: dict[str, str] = {
    "num-server-rounds": "rounds",
    "strategy": "strategy",
    "local-epochs": "local_epochs",
    "lr": "lr",
    "proximal-mu": "proximal_mu",
    "max-update-norm": "max_update_norm",
    "min-clients": "min_clients",
    "embedder": "embedder",
    "router-name": "router_name",
    "node-weights-min-answers": "node_weights_min_answers",
    "relative-norm": "relative_norm",
    "dp-noise": "dp_noise",
    "dp-clip": "dp_clip",
    "secure-agg": "secure_agg",
    "local-model": "local_model",
    "ability-rounds": "ability_rounds",
}
# Keys a run always sets itself (where to publish, the router the correction goes on): empty in the app's defaults.
PER_RUN_KEYS = ("publish-dir", "base-router", "base-version")

def run_config(defaults: FederationDefaults = DEFAULTS) -> dict[str, str | int | float | bool]:
    """The app's run config on these defaults, with the per-run keys empty."""
    config: dict[str, str | int | float | bool] = {key: getattr(defaults, name) for key, name in RUN_CONFIG_KEYS.items()}
    config.update({key: "" for key in PER_RUN_KEYS})
    return config


def _toml(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


APP_HEADER = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hybridgate-router-fl"
version = "1.0.0"
description = "Federated training of the hybridgate router"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "hybridgate"

[tool.flwr.app.components]
serverapp = "hybridgate.federated.deploy:server_app"
clientapp = "hybridgate.federated.deploy:client_app"
"""


def app_pyproject(defaults: FederationDefaults = DEFAULTS) -> str:
    """The ``pyproject.toml`` of the Flower app ``fl server`` submits: its run config is :func:`run_config`."""
    lines = [f"{key} = {_toml(value)}" for key, value in run_config(defaults).items()]
    return APP_HEADER + "\n[tool.flwr.app.config]\n" + "\n".join(lines) + "\n"
