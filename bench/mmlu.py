"""The routing benchmark's questions for the scripts here: RouteLLM's MMLU outcomes beside the project, and
their vectors under the shipped static embedder (cached, like the CLI's, under the cache root)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridgate.classifiers.data import RoutingData, load_routing_data
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.embedding_cache import embed_cached
from hybridgate.classifiers.static_vectors import cache_root

ROOT = Path(__file__).resolve().parent.parent
EMBEDDER = "all-MiniLM-L6-v2-static"


def add_data_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routellm-mmlu" / "responses")
    ap.add_argument("--weak", default="mistralai/Mixtral-8x7B-Instruct-v0.1")
    ap.add_argument("--strong", default="gpt-4-1106-preview")


def load(args: argparse.Namespace) -> RoutingData:
    return load_routing_data(args.data, args.weak, args.strong)


def static_vectors(texts: Sequence[str], what: str) -> np.ndarray:
    return embed_cached(load_embedder(EMBEDDER), list(texts), cache_root() / "embeddings", what)
