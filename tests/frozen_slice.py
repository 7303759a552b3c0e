"""A shipped router's claim about a frozen slice of a source, recomputed: what both shipped across-source routers'
tests check (tests/fixtures/across, MIT licence)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hybridgate.classifiers.across_train import slice_apgr
from hybridgate.classifiers.artifact import load_router
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import for_pair
from hybridgate.classifiers.sources import load_source

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "across"


def recompute_claim(folder: Path, embedder: Embedder) -> tuple[dict[str, Any], RouterModel, float]:
    """The router's header, the router set up for the claim's pair, and its APGR on the claim's frozen rows
    (the slice's bytes checked against the sha256 the header recorded)."""
    header = json.loads((folder / "router.json").read_text(encoding="utf-8"))
    claim = header["claims"]["frozen_slice"]
    path = FIXTURES / claim["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == claim["sha256"], "the frozen slice was changed"
    src = load_source(path, name=claim["source"])
    model = for_pair(load_router(folder, embedder=embedder.name, dim=embedder.dim), claim["weak"], claim["strong"])
    texts = list(src.prompts)
    got = slice_apgr(model, embedder.encode(texts), texts, src.column(claim["weak"]), src.column(claim["strong"]))
    return header, model, got
