"""The server's strategy: one of Flower's, behind a check of every gateway's reply before it is averaged in.

Composed the way Flower composes its own differential-privacy wrappers
(``DifferentialPrivacyServerSideFixedClipping(strategy, …)``): :class:`ValidatedStrategy` wraps any strategy and
forwards to it (as ``self.strategy``, Flower's name), so the check works the same in front of FedAvg, a robust strategy or the DP wrapper itself,
and what it refused is read from it after the run instead of being written into the run's settings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx, FedTrimmedAvg, MultiKrum, Strategy

from hybridgate.federated.checks import MAX_EXAMPLES, ReplyRejected, checked_count
from hybridgate.federated.defaults import DEFAULTS
from hybridgate.federated.task import UpdateRejected, check_update

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "fedprox": FedProx, "trimmed-mean": FedTrimmedAvg, "multikrum": MultiKrum}
SECURE_STRATEGIES = ("fedavg", "fedprox")  # the robust ones must see each update, which secure aggregation hides


class ValidatedStrategy(Strategy):
    """``strategy`` with every gateway's update checked before it aggregates: the shape, finite values, how far it moves
    the model (``max_update_norm``; with ``relative_norm``, also no further than that many times the round's
    median update) and the example count that weights it (a positive integer, capped at ``max_examples``).

    ``uniform=True`` is for a differential-privacy wrapper inside, whose accountant needs every sampled gateway's
    reply: a malformed update is not dropped but counted as no change, and every gateway weighs 1 whatever count
    it sent (user-level DP). The refusals are in :attr:`rejected`, as (round, why)."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        max_update_norm: float = DEFAULTS.max_update_norm,
        max_examples: int = MAX_EXAMPLES,
        relative_norm: float | None = None,
        uniform: bool = False,
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.max_update_norm = float("inf") if uniform else max_update_norm
        self.max_examples = max_examples
        self.relative_norm = relative_norm
        self.uniform = uniform
        self.rejected: list[tuple[int, str]] = []
        self._global = np.zeros(0)

    def summary(self) -> None:
        log.info("every reply checked before aggregation (max update norm %s, relative norm %s)", self.max_update_norm, self.relative_norm)
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self._global = arrays.to_numpy_ndarrays()[0].astype(np.float64)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self._as_no_change(server_round, replies) if self.uniform else self._checked(server_round, replies)
        if self.relative_norm is not None:
            kept = self._within_median(server_round, kept)
        return self.strategy.aggregate_train(server_round, kept)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def _checked(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        kept = []
        for msg in replies:
            if msg.has_error():
                kept.append(msg)
                continue
            try:
                check_update(msg.content["arrays"].to_numpy_ndarrays()[0], self._global, self.max_update_norm)
                # The count weights the average: a positive integer, capped, or the update does not count.
                metrics = msg.content["metrics"]
                metrics["num-examples"] = checked_count(metrics["num-examples"], self.max_examples)
            except (UpdateRejected, ReplyRejected, KeyError, TypeError) as exc:
                self.rejected.append((server_round, str(exc)))
                log.warning("round %d: update from node %s rejected: %s", server_round, msg.metadata.src_node_id, exc)
                continue
            kept.append(msg)
        return kept

    def _as_no_change(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        # Flower's clipping divides by the update's norm: "no change" is a step of 1e-9 (a gateway without labels
        # sends exactly the global vector, and that alone used to end the run with a ZeroDivisionError).
        unchanged = self._global.copy()
        unchanged.flat[0] += 1e-9
        kept = []
        for msg in replies:
            if not msg.has_error():
                try:
                    update = msg.content["arrays"].to_numpy_ndarrays()[0]
                    check_update(update, self._global, self.max_update_norm)
                    if not np.any(update.astype(np.float64) != self._global):
                        msg.content["arrays"] = ArrayRecord([unchanged])
                except (UpdateRejected, KeyError, TypeError, IndexError) as exc:
                    self.rejected.append((server_round, str(exc)))
                    log.warning("round %d: update from node %s counted as no change: %s", server_round, msg.metadata.src_node_id, exc)
                    msg.content["arrays"] = ArrayRecord([unchanged])
                msg.content["metrics"] = MetricRecord({"num-examples": 1})
            kept.append(msg)
        return kept

    def _within_median(self, server_round: int, replies: list[Message]) -> list[Message]:
        """A bound that needs no tuning: an update that moves the model more than ``relative_norm`` times as far as
        the round's median update is refused (an attacker cannot know the others' norms in advance)."""
        norms = {
            id(m): float(np.linalg.norm(m.content["arrays"].to_numpy_ndarrays()[0].astype(np.float64) - self._global))
            for m in replies if not m.has_error()
        }
        if len(norms) < 3:
            return replies
        limit = float(self.relative_norm or 0.0) * float(np.median(list(norms.values())))
        out = []
        for m in replies:
            moved = norms.get(id(m))
            if moved is not None and moved > limit:
                self.rejected.append((server_round, f"moves the model by {moved:.2f}, over {self.relative_norm} x the round's median"))
                continue
            out.append(m)
        return out


def build_strategy(
    name: str = DEFAULTS.strategy,
    *,
    clients: int,
    proximal_mu: float = DEFAULTS.proximal_mu,
    trim_beta: float = DEFAULTS.trim_beta,
    max_update_norm: float = DEFAULTS.max_update_norm,
    relative_norm: float | None = None,
    dp_noise: float = DEFAULTS.dp_noise,
    dp_clip: float = DEFAULTS.dp_clip,
    dp_delta: float = DEFAULTS.dp_delta,
) -> ValidatedStrategy:
    """Flower's strategy ``name`` for ``clients`` gateways, every one of them trained every round, behind the check;
    with ``dp_noise``, behind Flower's server-side clipping and noise with its RDP accountant first."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use {', '.join(STRATEGIES)}")
    # Every round waits for every expected gateway and trains them all (the first round could otherwise
    # start with the nodes that happened to be registered, which also breaks DP's accounting).
    kwargs: dict[str, Any] = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": clients, "min_train_nodes": clients}
    if name == "fedprox":
        kwargs["proximal_mu"] = proximal_mu
    if name == "trimmed-mean":
        kwargs["beta"] = trim_beta
    if name == "multikrum":
        kwargs["num_malicious_nodes"] = max(1, clients // 5)
        kwargs["num_nodes_to_select"] = max(1, clients - 2 * kwargs["num_malicious_nodes"] - 2)
    strategy = STRATEGIES[name](**kwargs)
    if dp_noise > 0:
        if name != "fedavg":
            raise ValueError("differential privacy is supported with fedavg only (Flower's accountant requires it)")
        # The clipping bounds every update, and Flower's accountant needs FedAvg's own aggregation.
        return ValidatedStrategy(with_dp(strategy, clients, dp_noise, dp_clip, dp_delta), uniform=True)
    return ValidatedStrategy(strategy, max_update_norm=max_update_norm, relative_norm=relative_norm)


def with_dp(strategy: Strategy, clients: int, noise: float, clip: float, delta: float) -> Strategy:
    """Flower's server-side fixed clipping + Gaussian noise around ``strategy``, with its RDP accountant (every
    client, every round): its ``accountant`` says the privacy spent."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    return DifferentialPrivacyServerSideFixedClipping(strategy, noise, clip, clients, accountant=accountant)


def epsilon_spent(strategy: Strategy) -> float | None:
    """The privacy a run spent, from the accountant of a DP wrapper anywhere in the composition; None without one."""
    current: Strategy | None = strategy
    while current is not None:
        accountant = getattr(current, "accountant", None)
        if accountant is not None:
            return float(accountant.get_privacy_spent().epsilon)
        current = getattr(current, "strategy", None)  # Flower's wrappers and ours keep the wrapped one here
    return None
