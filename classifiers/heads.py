"""Scoring heads: from a query's feature vector to a score in [0, 1], higher meaning "send to the cloud".

Every head is trained with scikit-learn and scored with plain numpy from the
arrays it exports, so a saved router is arrays and a JSON header and loading
one never runs code from the file. The targets:

- ``label``: 1 where the cloud is needed (strong right, weak wrong);
- ``gain``: strong minus weak correctness, in {-1, 0, 1}, mapped to [0, 1] as
  (gain + 1) / 2. Ranking by expected gain also pushes down the questions the
  cloud model gets wrong and the local one right.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from hybridgate.classifiers.numeric import need, sigmoid


class HeadError(ValueError):
    """A head cannot be built from the given settings or arrays."""


@dataclass
class TrainingSet:
    x: np.ndarray  # (n, d) float32
    label: np.ndarray  # (n,) int: cloud needed
    gain: np.ndarray  # (n,) int: strong - weak
    groups: Sequence[str]


class Head(Protocol):
    kind: ClassVar[str]

    def fit(self, data: TrainingSet) -> None: ...

    def score(self, x: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None: ...


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class LogisticHead:
    """L2-regularised logistic regression on the "cloud needed" label."""

    kind: ClassVar[str] = "logistic"
    C: float = 0.1
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    intercept: float = 0.0

    def fit(self, data: TrainingSet) -> None:
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=self.C, max_iter=5000).fit(data.x, data.label)
        self.coef = m.coef_[0].astype(np.float32)
        self.intercept = float(m.intercept_[0])

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x @ self.coef + self.intercept)

    def params(self) -> dict[str, Any]:
        return {"C": self.C, "target": "label"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": np.array([self.intercept], dtype=np.float32)}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        coef, intercept = need(arrays, "coef", "intercept")
        self.coef, self.intercept = coef.astype(np.float32), float(intercept.reshape(-1)[0])


@dataclass
class MLPHead:
    """A small ReLU network regressing the gain. On the label it overfits 1,400 rows; on the gain
    with a strong L2 penalty it ranks better than the linear model."""

    kind: ClassVar[str] = "mlp"
    hidden: int = 64
    alpha: float = 10.0
    seed: int = 0
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)

    def fit(self, data: TrainingSet) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        m = MLPRegressor(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, max_iter=300, random_state=self.seed)
        with warnings.catch_warnings():
            # 300 epochs under a strong penalty is the setting, not a failure to converge.
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            m.fit(data.x, data.gain.astype(np.float64))
        self.weights = [w.astype(np.float32) for w in m.coefs_]
        self.biases = [b.astype(np.float32) for b in m.intercepts_]

    def score(self, x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        return ((h @ self.weights[-1] + self.biases[-1])[:, 0] + 1.0) / 2.0

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "alpha": self.alpha, "seed": self.seed, "target": "gain"}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"w{i}": w for i, w in enumerate(self.weights)}
        out.update({f"b{i}": b for i, b in enumerate(self.biases)})
        return out

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        n = sum(1 for k in arrays if k.startswith("w") and k[1:].isdigit())
        if n == 0:
            raise HeadError("the router's arrays hold no MLP layers")
        self.weights = [a.astype(np.float32) for a in need(arrays, *(f"w{i}" for i in range(n)))]
        self.biases = [a.astype(np.float32) for a in need(arrays, *(f"b{i}" for i in range(n)))]


@dataclass
class KNNHead:
    """Similarity-weighted neighbours (RouteLLM's idea for its best MMLU router): the
    expected gain of the ``k`` most similar training queries, weighted by exp(similarity / tau)."""

    kind: ClassVar[str] = "knn"
    k: int = 100
    tau: float = 0.1
    memory: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float16))
    gains: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    # The memory widened to float32, made once per memory array: widening it on every query was most of a
    # decision's time (the memory ships as float16 to halve the router file).
    _wide: np.ndarray | None = field(default=None, repr=False, compare=False)
    _wide_of: np.ndarray | None = field(default=None, repr=False, compare=False)

    def fit(self, data: TrainingSet) -> None:
        self.memory = data.x.astype(np.float16)
        self.gains = data.gain.astype(np.int8)

    def wide_memory(self) -> np.ndarray:
        """The memory in float32, widened again only when the memory array itself was replaced."""
        memory = self.memory
        wide, of = self._wide, self._wide_of
        if wide is None or of is not memory:
            wide = memory.astype(np.float32)
            self._wide, self._wide_of = wide, memory
        return wide

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._score(x @ self.wide_memory().T)

    def score_left_out(self) -> np.ndarray:
        """Each remembered query scored by its neighbours other than itself: how it scores queries it never saw."""
        mem = self.wide_memory()
        sims = mem @ mem.T
        np.fill_diagonal(sims, -np.inf)
        return self._score(sims)

    def _score(self, sims: np.ndarray) -> np.ndarray:
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, axis=1)
        wts = np.exp((top - top.max(axis=1, keepdims=True)) / self.tau)
        gain = (wts * self.gains[idx]).sum(axis=1) / wts.sum(axis=1)
        return (gain + 1.0) / 2.0

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "tau": self.tau, "target": "gain"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory, "gains": self.gains}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.memory, self.gains = need(arrays, "memory", "gains")


@dataclass
class GroupPriorHead:
    """Which group (subject) is this query from, and how much does the cloud gain there?

    A multinomial logistic regression gives P(group | query); each group's mean
    gain is shrunk toward the overall mean by ``shrinkage`` pseudo-rows; the
    score is the expected gain under that posterior. It beats the subject prior
    that *knows* each question's subject: the soft posterior also places
    questions that read like another subject. With one group only it clusters
    the training queries (k-means, ``clusters``) and uses the clusters as groups.
    """

    kind: ClassVar[str] = "group-prior"
    C: float = 1.0
    shrinkage: float = 20.0
    clusters: int = 20
    seed: int = 0
    group_names: list[str] = field(default_factory=list)
    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    rates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def fit(self, data: TrainingSet) -> None:
        from sklearn.linear_model import LogisticRegression

        groups = list(data.groups)
        if len(set(groups)) < 2:
            from sklearn.cluster import KMeans

            k = max(2, min(self.clusters, len(groups) // 10))
            labels = KMeans(k, n_init=4, random_state=self.seed).fit(data.x).labels_
            groups = [f"cluster-{c}" for c in labels]
        names = sorted(set(groups))
        index = {g: i for i, g in enumerate(names)}
        y = np.array([index[g] for g in groups])
        overall = float(data.gain.mean())
        rates = np.array(
            [(data.gain[y == i].sum() + self.shrinkage * overall) / ((y == i).sum() + self.shrinkage) for i in range(len(names))]
        )
        m = LogisticRegression(C=self.C, max_iter=5000).fit(data.x, y)
        if len(names) == 2:  # sklearn keeps one row for two classes
            self.weight = np.vstack([-m.coef_[0] / 2, m.coef_[0] / 2]).astype(np.float32)
            self.bias = np.array([-m.intercept_[0] / 2, m.intercept_[0] / 2], dtype=np.float32)
        else:
            self.weight = m.coef_.astype(np.float32)
            self.bias = m.intercept_.astype(np.float32)
        self.rates = rates[m.classes_].astype(np.float32)
        self.group_names = [names[c] for c in m.classes_]

    def score(self, x: np.ndarray) -> np.ndarray:
        return (_softmax(x @ self.weight.T + self.bias) @ self.rates + 1.0) / 2.0

    def params(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "shrinkage": self.shrinkage,
            "clusters": self.clusters,
            "seed": self.seed,
            "target": "gain",
            "groups": self.group_names,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias, "rates": self.rates}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.weight, self.bias, self.rates = (a.astype(np.float32) for a in need(arrays, "weight", "bias", "rates"))


@dataclass
class GradientLogisticHead:
    """Logistic regression on the label trained by plain full-batch gradient descent in numpy.

    It exists for federated learning: each gateway starts from the global
    weights, takes ``epochs`` steps on its own rows, and may add FedProx's
    proximal term ``mu / 2 * ||w - w_global||^2``, which an sklearn solver
    cannot. No class weights: a gateway that reweighs its own labels would
    erase what distinguishes it from the others, which is what federation adds.
    """

    kind: ClassVar[str] = "gd-logistic"
    lr: float = 0.5
    epochs: int = 200
    l2: float = 1e-3
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # d + 1, bias last

    def init(self, dim: int) -> None:
        self.weights = np.zeros(dim + 1, dtype=np.float32)

    def fit(self, data: TrainingSet) -> None:
        self.init(data.x.shape[1])
        self.fit_from(self.weights, data)

    def fit_from(self, start: np.ndarray, data: TrainingSet, *, epochs: int | None = None, mu: float = 0.0) -> None:
        x = np.hstack([data.x, np.ones((len(data.x), 1), dtype=np.float32)]).astype(np.float64)
        y = data.label.astype(np.float64)
        w0 = np.asarray(start, dtype=np.float64)
        w = w0.copy()
        for _ in range(self.epochs if epochs is None else epochs):
            p = sigmoid(x @ w)
            grad = x.T @ (p - y) / len(y) + self.l2 * w + mu * (w - w0)
            w -= self.lr * grad
        self.weights = w.astype(np.float32)

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x @ self.weights[:-1] + self.weights[-1])

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr, "epochs": self.epochs, "l2": self.l2, "target": "label"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        (self.weights,) = (a.astype(np.float32) for a in need(arrays, "weights"))


def _registry() -> dict[str, type]:
    # The prior-correction head is built on the group-prior head above, so it lives in a module of its own
    # that imports this one; it joins the registry here, on first use.
    from hybridgate.classifiers.blend_head import BlendHead
    from hybridgate.classifiers.outcome_head import OutcomeHead
    from hybridgate.classifiers.pair_blend_head import PairBlendHead
    from hybridgate.classifiers.pair_blend_mmlu import MmluBlendHead
    from hybridgate.classifiers.prior_head import PriorCorrectionHead

    return {h.kind: h for h in (BlendHead, PairBlendHead, MmluBlendHead, OutcomeHead, PriorCorrectionHead, GroupPriorHead, LogisticHead, MLPHead, KNNHead, GradientLogisticHead)}


def __getattr__(name: str) -> Any:
    if name == "HEADS":
        return _registry()
    raise AttributeError(name)


_SETTABLE = {
    "blend": {
        "k", "tau", "w_length", "w_neighbours", "w_topic", "w_rules", "alpha", "bound", "C", "shrinkage", "centroids_k", "seed", "emb_dim",
    },
    "prior-correction": {"lam", "alpha", "bound", "gate", "C", "shrinkage", "centroids_k", "seed", "emb_dim"},
    "logistic": {"C"},
    "mlp": {"hidden", "alpha", "seed"},
    "knn": {"k", "tau"},
    "group-prior": {"C", "shrinkage", "clusters", "seed"},
    "gd-logistic": {"lr", "epochs", "l2"},
    "outcomes": {"local_model", "cloud_model"},
    "pair-blend": {
        "k", "tau", "w_length", "w_neighbours", "w_topic", "w_rules", "w_gain", "alpha", "bound", "C", "shrinkage", "centroids_k",
        "seed", "emb_dim", "local_model", "cloud_model",
    },
}
_SETTABLE["pair-blend-mmlu"] = _SETTABLE["pair-blend"] | {"w_mmlu", "w_choice"}
# What a head keeps in its header beyond its settings, handed back on loading (``load_params``).
_STORED = ("target", "groups", "shape_features", "weights", "rules", "outcome_model", "catalogue", "mmlu_part")


def make_head(kind: str, params: Mapping[str, Any] | None = None) -> Head:
    """A head of ``kind`` with ``params`` (unknown names are an error, listing the known ones)."""
    heads = _registry()
    if kind not in heads:
        raise HeadError(f"unknown head {kind!r}; the heads are {', '.join(heads)}")
    given = {k: v for k, v in (params or {}).items() if k not in _STORED}
    unknown = set(given) - _SETTABLE[kind]
    if unknown:
        raise HeadError(f"head {kind} has no setting {', '.join(sorted(unknown))}; it takes {', '.join(sorted(_SETTABLE[kind]))}")
    head = heads[kind](**given)
    if params and "groups" in params and hasattr(head, "group_names"):
        head.group_names = list(params["groups"])
    if params and hasattr(head, "load_params"):
        head.load_params(params)
    return head


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["C=0.5", "k=50"]`` -> ``{"C": 0.5, "k": 50}``: numbers become numbers."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise HeadError(f"expected NAME=VALUE, got {pair!r}")
        num: Any
        try:
            num = int(value)
        except ValueError:
            try:
                num = float(value)
            except ValueError:
                num = value
        out[name.strip()] = num
    return out
