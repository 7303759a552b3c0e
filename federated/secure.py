"""Secure aggregation for the fleet's rounds: Flower's SecAgg+ workflow, with differential privacy beside it.

The server runs Flower's ``SecAggPlusWorkflow`` (under a ``LegacyContext``, with
a legacy FedAvg); each gateway runs Flower's ``secaggplus_mod`` (and, under DP,
Flower's ``fixedclipping_mod`` inside it). A gateway's vector is quantised,
masked with pairwise and private masks and only the sum of the round's
survivors can be unmasked: what reaches the strategy's ``aggregate_fit`` is
that sum, divided by the sum of the weights (docs/federated.md says why the
workflow and not a port of its primitives to the Message API).

Three things this module adds around Flower's protocol, each small:

* :func:`protocol_shape` picks the SecAgg+ graph (every gateway a neighbour of
  every other up to 21, a ring neighbourhood of 21 beyond) and a reconstruction
  threshold of at least :data:`MIN_SURVIVORS`, and refuses a cohort under
  :data:`MIN_SECURE_COHORT`;
* :func:`secure_gate` is the gateway's mod: SecAgg+ messages go through Flower's
  mods, a plain training request or an individual statistics query is refused
  when the gateway requires secure aggregation, and the example count in the
  reply is replaced by 1 (the weight travels masked, inside the sum);
* :class:`NoisySum` adds Gaussian noise to the unmasked average on the server,
  scaled to the round's survivors, and composes one event a round in Flower's
  RDP accountant.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, MetricRecord
from flwr.app.message_type import MessageType
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, add_gaussian_noise_to_params, compute_stdv

log = logging.getLogger(__name__)

MIN_SECURE_COHORT = 4  # a round of fewer gateways is refused (one dropout could leave a sum of two)
MIN_SURVIVORS = 3  # the reconstruction threshold: the server never unmasks a sum of fewer than this many
MAX_NEIGHBOURS = 21  # SecAgg+'s graph: up to this many, every gateway shares keys with every other
THRESHOLD_SHARE = 0.6  # of a gateway's neighbours that must survive for its masks to be removed
CLIPPING_RANGE = 8.0  # each coordinate of a gateway's weighted vector is clipped to +-this before quantisation
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32  # with 2**22 levels a coordinate, the sum of up to 1,024 gateways cannot wrap around
MAX_SECURE_GATEWAYS = MODULUS_RANGE // QUANTIZATION_RANGE
MAX_SECURE_WEIGHT = 1_000  # a gateway's weight (labels) in a secure average is capped here: the protocol's max_weight
TASK = "task"  # the round's job in fitins.config: "train" (default), "node-weights" or "score-histogram"
PLAIN_REFUSED = 403


class SecureRefused(ValueError):
    """A secure round that must not start: too few gateways, or too many for the modulus."""


def protocol_shape(gateways: int, threshold_share: float = THRESHOLD_SHARE) -> tuple[int, int]:
    """(shares, reconstruction threshold) of SecAgg+ for a round of ``gateways``; refused below the minimum cohort."""
    if gateways < MIN_SECURE_COHORT:
        raise SecureRefused(
            f"secure aggregation needs at least {MIN_SECURE_COHORT} gateways a round, not {gateways}: with fewer, one dropout "
            f"leaves a sum of two, from which each can subtract its own update"
        )
    if gateways > MAX_SECURE_GATEWAYS:
        raise SecureRefused(f"secure aggregation sums at most {MAX_SECURE_GATEWAYS} gateways a round (2**32 / 2**22 levels), not {gateways}")
    shares = gateways if gateways <= MAX_NEIGHBOURS else MAX_NEIGHBOURS
    threshold = max(MIN_SURVIVORS, math.ceil(threshold_share * shares))
    return shares, min(threshold, shares - 1)


def dropouts_tolerated(gateways: int, threshold_share: float = THRESHOLD_SHARE) -> int:
    """How many of a round's gateways may vanish after sharing keys, the round still unmasking (complete graph)."""
    shares, threshold = protocol_shape(gateways, threshold_share)
    return shares - threshold


# --- the gateway's side -------------------------------------------------------------------------------------


def is_secure(msg: Message) -> bool:
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secure_gate(require_secure: bool, bypasses: Callable[[Context], bool] | None = None) -> Callable[..., Message]:
    """The gateway's mod. SecAgg+ messages go through Flower's ``secaggplus_mod`` and, when the server asks for a
    clipping norm (DP), Flower's ``fixedclipping_mod`` inside it (so the clipped vector is what is masked).
    ``require_secure``: a plain training request and the individual-statistics queries are refused, so a server
    cannot downgrade a gateway to sending its update in the clear. ``bypasses``: a simulated malicious gateway that
    skips its clipping mod (the attack rows)."""

    def clip_if_asked(call_next: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
        def inner(msg: Message, ctxt: Context) -> Message:
            config = msg.content.config_records.get("fitins.config")
            if config is not None and KEY_CLIPPING_NORM in config and not (bypasses is not None and bypasses(ctxt)):
                return fixedclipping_mod(msg, ctxt, call_next)
            return call_next(msg, ctxt)

        return inner

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        kind = msg.metadata.message_type
        if kind == MessageType.TRAIN and is_secure(msg):
            out = secaggplus_mod(msg, ctxt, clip_if_asked(call_next))
            # The count rode inside the masked vector; in the clear every gateway says 1.
            if "fitres.num_examples" in out.content.metric_records:
                out.content.metric_records["fitres.num_examples"] = MetricRecord({"num_examples": 1})
            return out
        if require_secure and (kind == MessageType.TRAIN or kind.startswith(MessageType.QUERY)):
            why = "this gateway sends its update and statistics only inside secure aggregation (SecAgg+)"
            log.warning("refusing a plain %s request: %s", kind, why)
            return Message(Error(code=PLAIN_REFUSED, reason=f"the gateway refuses: {why}"), reply_to=msg)
        return call_next(msg, ctxt)

    return mod


def stage_of(msg: Message) -> str | None:
    """The SecAgg+ stage a message asks for."""
    if not is_secure(msg):
        return None
    return str(msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE))


# --- the server's side --------------------------------------------------------------------------------------


@dataclass
class SecureLog:
    """What the server-side strategy was handed each round (the test of "the server sees only the sum" reads it),
    and how many gateways each round lost after sharing keys."""

    seen: list[list[np.ndarray]] = field(default_factory=list)
    counts: list[list[int]] = field(default_factory=list)  # the example counts the strategy was handed in the clear
    survivors: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    keep_seen: bool = False


class SumOnlyFedAvg(LegacyFedAvg):
    """Flower's legacy FedAvg under SecAgg+: each result it receives carries the unmasked average of the round's
    survivors (never one gateway's vector), and a weight of 1. It records what it was handed and refuses a sum
    of fewer than :data:`MIN_SURVIVORS` (the threshold already forbids it; this is the last line)."""

    def __init__(self, *, secure_log: SecureLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secure_log = secure_log

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
        pairs = super().configure_fit(server_round, parameters, client_manager)
        self.secure_log.sampled.append(len(pairs))
        return pairs

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.secure_log.survivors.append(len(results))
        if self.secure_log.keep_seen:
            self.secure_log.seen.append([parameters_to_ndarrays(r.parameters)[0].copy() for _, r in results])
            self.secure_log.counts.append([int(r.num_examples) for _, r in results])
        if len(results) < MIN_SURVIVORS:
            log.warning("round %d: a sum of %d gateways is not used (fewer than %d)", server_round, len(results), MIN_SURVIVORS)
            return None, {}
        return super().aggregate_fit(server_round, results, [])


class NoisySum(LegacyStrategy):
    """Central DP on the masked sum: the inner strategy's average plus Gaussian noise of ``noise x clip / n``, where
    ``n`` is the round's survivors (fewer survivors, a larger share each, more noise), and every gateway clips its own
    update (Flower's ``fixedclipping_mod``, asked for here through the clipping norm in the round's config). Each
    round composes one Gaussian event in Flower's RDP accountant (every gateway every round: no sampling
    amplification). Unlike Flower's ``DifferentialPrivacyClientSideFixedClipping`` it does not throw a round away
    when gateways drop out: SecAgg+ survives them, so the noise is scaled to the survivors instead."""

    def __init__(self, inner: LegacyStrategy, noise: float, clip: float, population: int, delta: float) -> None:
        from flwr.supercore.privacy_accounting import (
            GaussianPrivacyEvent,
            NeighboringRelation,
            PrivacyConfig,
            SamplingMethod,
        )
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        super().__init__()
        self.inner, self.noise, self.clip = inner, noise, clip
        self._event = GaussianPrivacyEvent
        self.accountant = RdpAccountant(
            PrivacyConfig(target_delta=delta, population_size=population,
                          neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE, sampling_method=SamplingMethod.NO_AMPLIFICATION)
        )

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
        pairs = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, ins in pairs:
            ins.config[KEY_CLIPPING_NORM] = float(self.clip)
        return pairs

    def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        params, metrics = self.inner.aggregate_fit(server_round, results, failures)
        if params is None:
            return None, metrics
        n = len(results)
        noisy = add_gaussian_noise_to_params(params, self.noise, self.clip, n)
        population = self.accountant.config.population_size
        self.accountant.compose(self._event(noise_multiplier=self.noise, sample_size=min(n, population), population_size=population))
        log.info("round %d: Gaussian noise of sd %.5f on the average of %d gateways", server_round, compute_stdv(self.noise, self.clip, n), n)
        return noisy, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)

    @property
    def epsilon(self) -> float:
        return float(self.accountant.get_privacy_spent().epsilon)


@dataclass
class SecureRound:
    """One secure aggregation run: ``rounds`` rounds of SecAgg+ over ``gateways`` gateways."""

    gateways: int
    rounds: int
    initial: np.ndarray
    config: dict[str, Scalar]
    max_weight: float = float(MAX_SECURE_WEIGHT)
    clipping_range: float = CLIPPING_RANGE
    threshold_share: float = THRESHOLD_SHARE
    timeout: float | None = None
    noise: float = 0.0
    clip: float = 1.0
    delta: float = 1e-5
    evaluate: Callable[[int, np.ndarray], None] | None = None
    secure_log: SecureLog = field(default_factory=SecureLog)
    epsilon: float | None = None


def run_secure(grid: Grid, context: Context, job: SecureRound) -> np.ndarray | None:
    """Run ``job`` with Flower's SecAgg+ workflow; the final vector (None if no round was aggregated)."""
    shares, threshold = protocol_shape(job.gateways, job.threshold_share)

    def evaluate_fn(server_round: int, ndarrays: list[np.ndarray], _config: dict[str, Scalar]) -> tuple[float, dict[str, Scalar]] | None:
        if job.evaluate is not None:
            job.evaluate(server_round, ndarrays[0])
        return None

    fedavg = SumOnlyFedAvg(
        secure_log=job.secure_log,
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=job.gateways, min_evaluate_clients=0,
        min_available_clients=job.gateways, initial_parameters=ndarrays_to_parameters([job.initial.astype(np.float32)]),
        on_fit_config_fn=lambda _round: dict(job.config), evaluate_fn=evaluate_fn,
    )
    strategy: LegacyStrategy = fedavg
    if job.noise > 0:
        strategy = NoisySum(fedavg, job.noise, job.clip, job.gateways, job.delta)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=job.rounds), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=shares, reconstruction_threshold=threshold, max_weight=job.max_weight,
            clipping_range=job.clipping_range, quantization_range=QUANTIZATION_RANGE, modulus_range=MODULUS_RANGE, timeout=job.timeout,
        )
    )
    log.info("SecAgg+: %d gateways, %d shares each, threshold %d, clipping range +-%g", job.gateways, shares, threshold, job.clipping_range)
    workflow(grid, legacy)
    if isinstance(strategy, NoisySum):
        job.epsilon = strategy.epsilon if strategy.accountant.num_releases else 0.0
    if not job.secure_log.survivors:
        return None
    from flwr.compat.common import recorddict_compat as compat

    params = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    return parameters_to_ndarrays(params)[0]


# --- the fleet's other sums ---------------------------------------------------------------------------------
#
# A statistic that is a sum goes through SecAgg+ as one more one-round job: each gateway sends ``[c, c * x]`` with
# weight 1, ``x`` scaled into [0, 1] and ``c`` its share of the weight (0 when it has too little to say), so the
# unmasked average is ``[mean c, mean c * x]`` and the server reads ``sum c x / sum c`` and nothing per gateway.

HISTOGRAM_BINS = 200
MIN_HISTOGRAM_LABELS = 20  # a gateway with fewer labels sends an empty histogram (a few scores' bins would be those scores)


def weighted_vector(share: float, values: np.ndarray) -> np.ndarray:
    """What a gateway sends for a secure weighted mean: its weight share in [0, 1], then the values times it."""
    c = float(min(max(share, 0.0), 1.0))
    return np.concatenate([[c], c * np.clip(values, 0.0, 1.0)]).astype(np.float32)


def weighted_mean(average: np.ndarray, gateways: int) -> tuple[np.ndarray | None, float]:
    """The weighted mean of the ``x`` the gateways sent and the summed weight share, from the unmasked average."""
    total = float(average[0]) * gateways
    if total <= 1e-6:
        return None, 0.0
    return np.clip(average[1:] / average[0], 0.0, 1.0), total


def score_histogram(scores: np.ndarray) -> np.ndarray:
    """A gateway's scores as the share of them in each of :data:`HISTOGRAM_BINS` equal bins of [0, 1]: a sum over its
    labels, so the fleet's is the sum of the gateways' (and the server sees only that)."""
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return counts / max(len(scores), 1)


def histogram_quantiles(histogram: np.ndarray, points: int = 101) -> list[float]:
    """Quantiles of the pooled scores read off the pooled histogram (linear within a bin): what calibrates the
    published router, each within one bin (1/200) of the pooled scores' own."""
    h = np.clip(np.asarray(histogram, dtype=np.float64), 0.0, None)
    if h.sum() <= 0:
        return [float(v) for v in np.linspace(0.0, 1.0, points)]
    cum = np.cumsum(h)
    cum /= cum[-1]
    width = 1.0 / len(h)
    out = []
    for p in np.linspace(0.0, 1.0, points):
        if p == 0.0:
            out.append(float(np.flatnonzero(h)[0] * width))
            continue
        i = min(int(np.searchsorted(cum, p, side="left")), len(h) - 1)
        before = cum[i - 1] if i > 0 else 0.0
        mass = cum[i] - before
        out.append(float((i + (np.clip((p - before) / mass, 0.0, 1.0) if mass > 0 else 0.0)) * width))
    return [float(v) for v in np.minimum(np.maximum.accumulate(out), 1.0)]


__all__ = [
    "CLIPPING_RANGE", "MIN_SECURE_COHORT", "MIN_SURVIVORS", "NoisySum", "SecureLog", "SecureRefused", "SecureRound",
    "SumOnlyFedAvg", "dropouts_tolerated", "protocol_shape", "run_secure", "secure_gate",
]
