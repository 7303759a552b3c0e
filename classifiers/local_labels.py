"""Which of a gateway's labels say how its local model did, as the numbers an outcomes router reads.

Shared by the gateway, which learns an unknown local model's ability from them
(``serving/router_adapt.py``), and by its federated client, which sends the
fleet the sums of the same labels (``federated/deploy.py``): both must read the
same labels the same way, and hold out the same quarter, so that the gateway can
judge the fleet's ability on labels the fleet never saw.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

HOLDOUT = 0.25
# How far an unknown model's ability may be from the prior (offset, loadings): as in pair_score.adapted. The
# gateway's own fit and the fleet's use the same, so the fleet's is the one a gateway holding every label would fit.
SD_UNKNOWN = (1.5, 0.3)
# Label sources that say how the local model did whatever the route: a shadow comparison and a cascade judge
# the local answer; a rating does only when the local model gave the answer.
LOCAL_JUDGED = ("shadow", "cascade")


def held_out(row: dict[str, Any]) -> bool:
    """Whether a label is in the gateway's held-out quarter: by a hash of the label, so the split is stable."""
    key = f"{row.get('ts')}:{row.get('base_score')}:{row.get('label')}"
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < HOLDOUT


def local_outcomes(rows: list[dict[str, Any]], embedder: str, dim: int, extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query inputs, did the local model do well, held out) of the labels that say how the local model did and
    keep this router's inputs. A label is "the cloud was needed", so the local outcome is ``1 - label``."""
    keep = [
        r for r in rows
        if r.get("embedder") == embedder and r.get("label") in (0, 1)
        and isinstance(r.get("vector"), list) and len(r["vector"]) == dim
        and isinstance(r.get("inputs"), list) and len(r["inputs"]) == extra
        and (r.get("source") in LOCAL_JUDGED or r.get("route") == "local")
    ]
    x = np.asarray([r["vector"] + r["inputs"] for r in keep], dtype=np.float64).reshape(len(keep), dim + extra)
    y = 1.0 - np.asarray([int(r["label"]) for r in keep], dtype=np.float64)
    return x, y, np.array([held_out(r) for r in keep], dtype=bool)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
