"""Which node of a route answers: the one whose weighted parts predict the shortest total time.

The gateway measures each node (``serving/node_stats.py``) and hands the
features in; this module only scores, so a choice can be replayed in a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hybridgate.classifiers.node_weights import PARTS, NodeFeatures, NodeWeights


@dataclass(frozen=True)
class NodeScore:
    """One candidate node's expected total milliseconds, and what each part adds to it."""

    name: str
    total_ms: float
    parts_ms: Mapping[str, float]  # weight times part, per part (cpu, ai, nl), plus the intercept
    features: NodeFeatures

    def as_dict(self) -> dict[str, object]:
        f = self.features
        return {
            "name": self.name,
            "expected_ms": round(self.total_ms, 1),
            "parts_ms": {k: round(v, 1) for k, v in self.parts_ms.items()},
            "features": {"load": f.load, "ms_per_token": round(f.ms_per_token, 3), "rtt_ms": round(f.rtt_ms, 2), "accelerator": f.accelerator},
        }


def score_nodes(features: Mapping[str, NodeFeatures], weights: NodeWeights, tokens: int) -> dict[str, NodeScore]:
    out = {}
    w = weights.array()
    for name, f in features.items():
        parts = f.parts(tokens)
        contrib = {"intercept": weights.intercept_ms, **{p: float(w[i + 1] * parts[i]) for i, p in enumerate(PARTS)}}
        out[name] = NodeScore(name, float(sum(contrib.values())), contrib, f)
    return out
