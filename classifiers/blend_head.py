"""The default router's head: four signals that each carry over to unseen queries, added in standard units.

What was measured on the transfer protocol (``shared/docs/routing-benchmark.md``;
the README's "Routing quality" has every variant tried):

- **length** (log words, standardised on the training queries) is the
  strongest single signal on unseen subjects (0.593), and the one a small model
  fails on whatever the topic;
- **neighbours**: the cloud's gain on the ``k`` most similar training queries
  (RouteLLM's similarity-weighted idea), standardised; alone it transfers
  nearly as well as length (0.587) and it ranks *within* a topic, where length
  cannot;
- **topic**: the gated, bounded topic correction of the prior-correction head
  (:class:`~hybridgate.classifiers.prior_head.TopicCorrection`): full weight on
  familiar traffic, none far from the training data;
- **rules** for what the training data never shows: open requests (no
  lettered options) for code, mathematics, steps or a long answer push up;
  greetings, creative writing, lookups, extraction and short answers push down,
  with the rule scorer's written weights (:data:`hybridgate.classifiers.shape.PRIOR`),
  not fitted. On multiple-choice questions they are silent, so they cannot learn
  a benchmark's quirks (on MMLU, "mathematics is hard" is false: GPT-4 without
  working gains nothing there), and on chat they keep the direction a 135M
  model needs.

The sum is then scaled to a probability that the cloud is needed (one slope
and one offset fitted on the training queries, the slope kept positive), so the
score means the same as the other heads' and this gateway's adapter works on
log-odds of the usual size. Each term is a named signal, so every score can be
explained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hybridgate.classifiers.heads import HeadError, KNNHead, TrainingSet
from hybridgate.classifiers.numeric import need, sigmoid
from hybridgate.classifiers.prior_head import TopicCorrection, embedding_part, split_shape
from hybridgate.classifiers.shape import NAMES as SHAPE_NAMES
from hybridgate.classifiers.shape import PRIOR

RULE_FEATURES = ("code", "math", "steps", "long_answer", "short_answer", "extraction", "creative", "lookup", "greeting")
RULES = np.array([PRIOR[i] if n in RULE_FEATURES else 0.0 for i, n in enumerate(SHAPE_NAMES)], dtype=np.float32)
_LENGTH = SHAPE_NAMES.index("length")
_CHOICES = SHAPE_NAMES.index("choices")


@dataclass
class BlendHead:
    """length + neighbours + topic + rules on open requests, each in standard units; target: the cloud's gain."""

    kind: ClassVar[str] = "blend"
    needs_shape: ClassVar[bool] = True
    k: int = 100
    tau: float = 0.1
    w_length: float = 1.0
    w_neighbours: float = 1.0
    w_topic: float = 2.0
    w_rules: float = 2.0
    alpha: float = 1.0
    bound: float = 2.0
    C: float = 1.0
    shrinkage: float = 20.0
    centroids_k: int = 32
    seed: int = 0
    emb_dim: int = 0  # leading columns that are the embedding; 0: all but shape
    group_names: list[str] = field(default_factory=list)
    neighbours: KNNHead = field(default_factory=KNNHead)
    stats: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32))  # length, neighbours
    scale: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0], dtype=np.float32))  # slope, offset of the log-odds
    correction: TopicCorrection = field(default_factory=TopicCorrection)

    split = staticmethod(split_shape)

    def _embedding(self, topic_in: np.ndarray) -> np.ndarray:
        return embedding_part(topic_in, self.emb_dim)

    def _correction(self) -> TopicCorrection:
        return TopicCorrection(self.alpha, self.bound, 1, self.C, self.shrinkage, self.centroids_k, self.seed)

    def fit(self, data: TrainingSet) -> None:
        topic_in, shape = self.split(data.x)
        emb = self._embedding(topic_in)
        self.neighbours = KNNHead(k=self.k, tau=self.tau)
        self.neighbours.fit(TrainingSet(emb, data.label, data.gain, data.groups))
        n = self.neighbours.score_left_out()  # a query's own outcome would flatter the scale
        length = shape[:, _LENGTH]
        self.stats = np.array(
            [length.mean(), max(float(length.std()), 1e-6), n.mean(), max(float(n.std()), 1e-6)], dtype=np.float32
        )
        self.correction = self._correction()
        self.correction.fit(topic_in, emb, data)
        self.group_names = self.correction.group_names
        self.scale = platt(self._sum(data.x, neighbours=n), data.label)

    def _sum(self, x: np.ndarray, neighbours: np.ndarray | None = None) -> np.ndarray:
        return np.sum(list(self._raw_terms(x, neighbours).values()), axis=0)

    def terms(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each signal's push on the log-odds, per row; the rules one per feature."""
        return {name: self.scale[0] * v for name, v in self._raw_terms(x).items()}

    def _raw_terms(self, x: np.ndarray, neighbours: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``neighbours``: the rows' neighbour scores when already known (the training rows', left one out)."""
        topic_in, shape = self.split(x)
        emb = self._embedding(topic_in)
        s = self.stats
        n = self.neighbours.score(emb) if neighbours is None else neighbours
        out = {
            "length": self.w_length * (shape[:, _LENGTH] - s[0]) / s[1],
            "neighbours": self.w_neighbours * (n - s[2]) / s[3],
            "topic": self.w_topic * self.correction.parts(topic_in, emb)[0],
        }
        open_request = 1.0 - np.clip(shape[:, _CHOICES], 0.0, 1.0)
        for i, name in enumerate(SHAPE_NAMES):
            if RULES[i]:
                out[name] = self.w_rules * open_request * RULES[i] * shape[:, i]
        return out

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.scale[0] * self._sum(x) + self.scale[1]

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(x))

    def explained(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float]]]:
        terms = {name: float(v[0]) for name, v in self.terms(x[:1]).items()}
        pushes = sorted(((n, p) for n, p in terms.items() if abs(p) >= 1e-4), key=lambda p: -abs(p[1]))
        return sigmoid(np.array([sum(terms.values()) + float(self.scale[1])])), pushes

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k, "tau": self.tau, "w_length": self.w_length, "w_neighbours": self.w_neighbours, "w_topic": self.w_topic,
            "w_rules": self.w_rules, "alpha": self.alpha, "bound": self.bound, "C": self.C, "shrinkage": self.shrinkage,
            "centroids_k": self.centroids_k, "seed": self.seed, "emb_dim": self.emb_dim, "target": "gain", "groups": self.group_names,
            "shape_features": list(SHAPE_NAMES), "rules": {n: float(RULES[i]) for i, n in enumerate(SHAPE_NAMES) if RULES[i]},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"stats": self.stats, "scale": self.scale, **{f"neighbours_{k}": v for k, v in self.neighbours.arrays().items()}, **self.correction.arrays()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        stats, scale = need(arrays, "stats", "scale")
        if stats.shape != (4,):
            raise HeadError(f"this router's stats have shape {stats.shape}; this version reads 4 numbers")
        memory, gains = need(arrays, "neighbours_memory", "neighbours_gains")
        self.stats, self.scale = stats.astype(np.float32), scale.astype(np.float32).reshape(-1)[:2]
        self.neighbours = KNNHead(k=self.k, tau=self.tau)
        self.neighbours.load_arrays({"memory": memory, "gains": gains})
        self.correction = self._correction()
        self.correction.load_arrays(arrays)


def platt(s: np.ndarray, y: np.ndarray, iters: int = 100) -> np.ndarray:
    """Slope and offset of ``P(y) = sigmoid(a * s + b)``: damped Newton steps from the base rate (each step halved
    until the loss falls), a little ridge so a separable set cannot drive them to infinity, and ``a`` kept positive
    (a higher sum never means a lower probability)."""
    s = np.asarray(s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = np.stack([s, np.ones_like(s)], axis=1)
    rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    w = np.array([0.0, np.log(rate / (1 - rate))])

    def loss(v: np.ndarray) -> float:
        z = x @ v
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5e-3 * v @ v)

    current = loss(w)
    for _ in range(iters):
        p = sigmoid(x @ w)
        grad = x.T @ (p - y) + 1e-3 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w, previous, current = w - t * step, current, loss(w - t * step)
        if previous - current < 1e-10:
            break
    w[0] = max(w[0], 1e-3)
    return w.astype(np.float32)
