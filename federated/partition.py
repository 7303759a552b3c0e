"""How the benchmark spreads the training questions over simulated gateways (../shared/docs/federated-benchmark.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

Partition = Literal["by-subject", "iid"]


def subject_of(group: str) -> str:
    return group.removeprefix("mmlu_")


def assign(prompts: Sequence[str], groups: Sequence[str], k: int, how: Partition) -> np.ndarray:
    """The gateway (0..k-1) of each row.

    ``by-subject``: the sorted subject names, subject i to gateway i mod k (each
    device sees its own kind of use). ``iid``: floor(k * u) with u from
    sha256("gateway:" + prompt).
    """
    if k < 1:
        raise ValueError("at least one gateway is needed")
    if how == "by-subject":
        index = {s: i for i, s in enumerate(sorted({subject_of(g) for g in groups}))}
        return np.array([index[subject_of(g)] % k for g in groups], dtype=np.int64)
    if how == "iid":
        return np.array(
            [int(k * int(hashlib.sha256(f"gateway:{p}".encode()).hexdigest()[:8], 16) / 2**32) for p in prompts], dtype=np.int64
        )
    raise ValueError(f"unknown partition {how!r}; use by-subject or iid")
