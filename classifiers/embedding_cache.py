"""Vectors of prompts already embedded, kept on disk per embedder, so a second run of
``router compare`` or ``eval`` on the same data does not embed 14,000 prompts again."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridgate.classifiers.embedder import Embedder, encode_with_progress


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_cached(embedder: Embedder, texts: Sequence[str], cache_dir: Path | None, description: str = "embedding") -> np.ndarray:
    """Embed ``texts``, reading and extending ``cache_dir/<embedder>.npz``; no cache when ``cache_dir`` is None."""
    if cache_dir is None:
        return encode_with_progress(embedder, texts, description)
    # Static vectors carry a fingerprint of their table: new vectors under an old name never meet stale ones.
    fingerprint = getattr(embedder, "fingerprint", None)
    path = cache_dir / f"{embedder.name}-{embedder.dim}{'-' + fingerprint if fingerprint else ''}.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                known = dict(zip(npz["keys"].tolist(), npz["vectors"], strict=True))
        except (ValueError, KeyError, OSError):
            known = {}
    keys = [_key(t) for t in texts]
    todo = sorted({i for i, k in enumerate(keys) if k not in known}, key=lambda i: keys[i])
    seen: dict[str, int] = {}
    todo = [i for i in todo if seen.setdefault(keys[i], i) == i]
    if todo:
        fresh = encode_with_progress(embedder, [texts[i] for i in todo], description)
        for i, vec in zip(todo, fresh, strict=True):
            known[keys[i]] = vec
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(list(known), dtype="U64"), vectors=np.stack(list(known.values())).astype(np.float32))
        os.replace(tmp, path)
    return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, embedder.dim), np.float32)
