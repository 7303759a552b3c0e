"""A model of every model's outcome on every query: what the query asks (from its text) and what each model can do.

Difficulty is not gain: the questions every model fails are the ones the cloud
fails too. What pays is the chance that *this* cloud model succeeds where
*this* local model fails, so the router models each model's outcome and scores
a pair by the difference. The model is a multidimensional item-response model
(2PL family) whose query side is read from the text:

    logit P(model m does well on query q) = theta_m + gamma_s + eps_ms + v_m . u_q,   u_q = x_q W

- ``x_q``: the query's static vector and its standardised shape features
  (length among them), :func:`query_inputs`;
- ``W``: a linear map to ``d`` latent dimensions, shared by all sources, so a
  kind of query seen in one source carries to the next;
- ``theta_m`` (ability), ``v_m`` (what it is good at): one per model, shared by
  the names a model goes by in several sources (:data:`ALIASES`);
- ``gamma_s`` and ``eps_ms``: each source's offset and each model's offset in
  it, so the query side never has to learn which source a query came from (the
  targets are, in effect, centred within source); a served query has no source
  and gets the mean offset.

Graded outcomes (AlpacaEval's preference in [0, 1]) enter the log-loss as they
are. Fitting is full-batch Adam in numpy (seconds on the four train splits);
scoring is one matrix product and two sigmoids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.numeric import sigmoid

# Names one model goes by in several logged sets (all map to the first name the catalogue keeps).
ALIASES: dict[str, str] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "Mixtral-8x7B-Instruct-v0.1",
    "Mixtral-8x7B-Instruct-v0.1_concise": "Mixtral-8x7B-Instruct-v0.1",
    "gpt-4-1106-preview": "gpt4_1106_preview",
    "gpt-4-turbo": "gpt4_1106_preview",
    "llama-3.1-8b-instruct": "Meta-Llama-3_1-8B-Instruct",
    "meta-llama-3.1-8b-instruct": "Meta-Llama-3_1-8B-Instruct",
    "mistral-7b-instruct-v0.2": "Mistral-7B-Instruct-v0.2",
    "gemma-2b-it": "gemma-2b-it",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.split("/")[-1].lower()).strip("-").replace("3-1", "3.1")


def canonical(name: str) -> str:
    """The catalogue's name for a model name as some logged set or user spells it."""
    if name in ALIASES:
        return ALIASES[name]
    want = _norm(name)
    for alias, target in ALIASES.items():
        if _norm(alias) == want:
            return target
    return name


@dataclass
class Block:
    """One source's training rows: inputs, outcomes (NaN: missing) and which catalogue model each column is."""

    source: str
    x: np.ndarray  # (n, D) float64
    y: np.ndarray  # (n, m) float64 in [0, 1] or NaN
    models: list[str]  # canonical names, one per column of y


@dataclass
class OutcomeModel:
    """The fitted arrays and how to read a query's outcome for any catalogued (or unknown) model."""

    dim: int = 6
    l2_w: float = 0.01
    l2_v: float = 0.01
    l2_eps: float = 0.1
    steps: int = 400
    lr: float = 0.03
    seed: int = 0
    x_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    models: list[str] = field(default_factory=list)
    theta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    v: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    sources: list[str] = field(default_factory=list)
    gamma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eps: dict[tuple[str, str], float] = field(default_factory=dict)

    # -- fitting -------------------------------------------------------------------------------------------------

    def fit(self, blocks: Sequence[Block]) -> OutcomeModel:
        blocks = [b for b in blocks if len(b.x) and b.y.shape[1]]
        if not blocks:
            raise ValueError("no rows to fit the outcome model on")
        allx = np.concatenate([b.x for b in blocks])
        self.x_mean = allx.mean(axis=0)
        sd = allx.std(axis=0)
        self.x_scale = np.where(sd > 1e-6, sd, 1.0)
        self.models = sorted({m for b in blocks for m in b.models})
        self.sources = [b.source for b in blocks]
        mi = {m: i for i, m in enumerate(self.models)}
        rng = np.random.default_rng(self.seed)
        D, M, S, d = allx.shape[1], len(self.models), len(blocks), self.dim
        xs = [(b.x - self.x_mean) / self.x_scale for b in blocks]
        cols = [np.array([mi[m] for m in b.models]) for b in blocks]
        masks = [~np.isnan(b.y) for b in blocks]
        ys = [np.nan_to_num(b.y) for b in blocks]
        weights = [mk / max(1, mk.sum()) for mk in masks]  # each source counts the same, whatever its size
        params: dict[str, Any] = {
            "w": rng.normal(0, 0.01, (D, d)),
            "v": rng.normal(0, 0.1, (M, d)),
            "theta": np.zeros(M),
            "gamma": np.zeros(S),
            "eps": [np.zeros(len(c)) for c in cols],
        }
        # Start each model's ability at its mean outcome's log-odds.
        sums, counts = np.zeros(M), np.zeros(M)
        for c, y, mk in zip(cols, ys, masks, strict=True):
            np.add.at(sums, c, (y * mk).sum(axis=0))
            np.add.at(counts, c, mk.sum(axis=0))
        rate = np.clip(sums / np.maximum(counts, 1), 0.02, 0.98)
        params["theta"] = np.log(rate / (1 - rate))
        flat = _Adam(self.lr)
        for _ in range(self.steps):
            g = {"w": self.l2_w * params["w"], "v": self.l2_v * params["v"],
                 "theta": np.zeros(M), "gamma": np.zeros(S), "eps": [self.l2_eps * e for e in params["eps"]]}
            for s in range(S):
                u = xs[s] @ params["w"]  # (n, d)
                vs = params["v"][cols[s]]  # (m, d)
                z = u @ vs.T + params["theta"][cols[s]] + params["gamma"][s] + params["eps"][s]
                r = (sigmoid(z) - ys[s]) * weights[s]  # d loss / d z
                g["w"] += xs[s].T @ (r @ vs)
                np.add.at(g["v"], cols[s], r.T @ u)
                colsum = r.sum(axis=0)
                np.add.at(g["theta"], cols[s], colsum)
                g["gamma"][s] += colsum.sum()
                g["eps"][s] += colsum
            flat.step(params, g)
        self.w, self.v, self.theta = params["w"], params["v"], params["theta"]
        self.gamma = params["gamma"]
        self.eps = {(b.source, m): float(e) for b, es in zip(blocks, params["eps"], strict=True) for m, e in zip(b.models, es, strict=True)}
        return self

    # -- reading ------------------------------------------------------------------------------------------------

    def latent(self, x: np.ndarray) -> np.ndarray:
        """The query side ``u`` for rows of raw inputs."""
        return ((x - self.x_mean) / self.x_scale) @ self.w

    def shape_part(self, x: np.ndarray) -> np.ndarray:
        """The standardised shape features of rows of raw inputs (their last columns)."""
        from hybridgate.classifiers.shape import NAMES

        n_shape = len(NAMES)
        return (x[:, -n_shape:] - self.x_mean[-n_shape:]) / self.x_scale[-n_shape:]

    def ability(self, model: str, source: str | None = None) -> tuple[float, np.ndarray] | None:
        """(offset, loadings) of a catalogued model, on ``source``'s scale when the model was seen there."""
        name = canonical(model)
        if name not in self.models:
            return None
        i = self.models.index(name)
        offset = float(self.theta[i]) + self.source_offset(source)
        if source is not None:
            offset += self.eps.get((source, name), 0.0)
        return offset, self.v[i]

    def source_offset(self, source: str | None) -> float:
        if source is not None and source in self.sources:
            return float(self.gamma[self.sources.index(source)])
        return float(self.gamma.mean()) if len(self.gamma) else 0.0

    def prior_ability(self, quantile: float) -> tuple[float, np.ndarray]:
        """An unknown model's ability: the catalogue's ``quantile`` (a cloud model is assumed strong, a local one weak)."""
        q = float(np.quantile(self.theta, quantile))
        near = np.argsort(np.abs(self.theta - q))[: max(1, len(self.theta) // 5)]
        return q + self.source_offset(None), self.v[near].mean(axis=0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "x_mean": self.x_mean.astype(np.float32), "x_scale": self.x_scale.astype(np.float32), "w": self.w.astype(np.float32),
            "theta": self.theta.astype(np.float32), "v": self.v.astype(np.float32), "gamma": self.gamma.astype(np.float32),
        }

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "l2_w": self.l2_w, "l2_v": self.l2_v, "l2_eps": self.l2_eps, "steps": self.steps, "lr": self.lr,
                "seed": self.seed, "models": self.models, "sources": self.sources,
                "eps": [[s, m, round(e, 5)] for (s, m), e in sorted(self.eps.items())]}

    @classmethod
    def from_saved(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> OutcomeModel:
        m = cls(dim=int(params["dim"]), l2_w=float(params["l2_w"]), l2_v=float(params["l2_v"]), l2_eps=float(params["l2_eps"]),
                steps=int(params["steps"]), lr=float(params["lr"]), seed=int(params["seed"]))
        m.models, m.sources = list(params["models"]), list(params["sources"])
        m.eps = {(str(s), str(n)): float(e) for s, n, e in params.get("eps", [])}
        for k in ("x_mean", "x_scale", "w", "theta", "v", "gamma"):
            setattr(m, k, np.asarray(arrays[k], dtype=np.float64))
        if m.w.shape[1] != m.dim or m.v.shape != (len(m.models), m.dim) or m.gamma.shape != (len(m.sources),):
            raise ValueError("the outcome model's arrays do not match its header")
        return m


class _Adam:
    """Adam over a dict of arrays (and lists of arrays), in place."""

    def __init__(self, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
        self.lr, self.b1, self.b2, self.t = lr, b1, b2, 0
        self.m: dict[str, Any] = {}
        self.s: dict[str, Any] = {}

    def step(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        self.t += 1
        for k, g in grads.items():
            if isinstance(g, list):
                for j, gj in enumerate(g):
                    self._one(f"{k}.{j}", params[k], j, gj)
            else:
                self._one(k, params, k, g)

    def _one(self, key: str, holder: Any, idx: Any, g: np.ndarray) -> None:
        m = self.m.setdefault(key, np.zeros_like(g))
        s = self.s.setdefault(key, np.zeros_like(g))
        m *= self.b1
        m += (1 - self.b1) * g
        s *= self.b2
        s += (1 - self.b2) * g * g
        mh = m / (1 - self.b1**self.t)
        sh = s / (1 - self.b2**self.t)
        holder[idx] = holder[idx] - self.lr * mh / (np.sqrt(sh) + 1e-8)
