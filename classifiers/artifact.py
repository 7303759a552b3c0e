"""A router on disk: ``router.json`` (the header) and ``arrays.npz`` (the numbers), nothing else.

The header names the embedder and its dimension, the head and its settings,
the training data's hash, the metrics, the library versions and the sha256 of
the arrays file. Loading checks that hash before reading a byte of the arrays,
reads them with ``allow_pickle=False``, and refuses a router made for another
embedder: a saved router never runs code and never scores with the wrong vectors.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter
from hybridgate.classifiers.features import NAMES as FEATURE_NAMES
from hybridgate.classifiers.heads import HeadError, make_head
from hybridgate.classifiers.model import RouterModel

FORMAT = "hybridgate-router"
FORMAT_VERSION = 1
HEADER = "router.json"
ARRAYS = "arrays.npz"
_LIBRARIES = ("numpy", "scikit-learn", "sentence-transformers", "onnxruntime", "hybridgate")


class ArtifactError(ValueError):
    """A router folder that cannot be trusted or used; the message says which file and why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def save_router(model: RouterModel, folder: Path, *, name: str | None = None) -> dict[str, Any]:
    """Write the folder (arrays first, header last, each atomically) and return the header."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"head.{k}": np.ascontiguousarray(v) for k, v in model.head.arrays().items()}
    if model.features:
        arrays["features.mean"] = model.feature_mean
        arrays["features.scale"] = model.feature_scale
    for prefix, adapter in (("fleet", model.fleet), ("fleet_step", model.fleet_step)):
        if adapter is not None:
            arrays.update({k.replace("adapter.", f"{prefix}.", 1): v for k, v in adapter.arrays().items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    blob = buf.getvalue()
    digest = _sha256(blob)
    meta = {k: v for k, v in model.meta.items() if k not in ("format", "format_version", "arrays", "libraries", "version")}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or model.name,
        "version": digest[:12],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "embedder": {"name": model.embedder, "dim": model.dim},
        "features": list(FEATURE_NAMES) if model.features else [],
        "head": {"kind": model.head.kind, "params": model.head.params()},
        **{k: v for k, v in meta.items() if k not in ("name", "created", "embedder", "features", "head")},
        "arrays": {"file": ARRAYS, "sha256": digest, "bytes": len(blob)},
        "libraries": _versions(),
    }
    _write_atomic(folder / ARRAYS, blob)
    _write_atomic(folder / HEADER, (json.dumps(header, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    model.meta = header
    return header


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_header(folder: Path) -> dict[str, Any]:
    path = folder / HEADER
    if not path.is_file():
        raise ArtifactError(f"{folder}: not a router folder (no {HEADER})")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {header.get('format_version')} is not {FORMAT_VERSION}; retrain or upgrade")
    return header


def load_router(folder: Path, *, embedder: str | None = None, dim: int | None = None) -> RouterModel:
    """Load and verify; ``embedder``/``dim`` are what the caller will feed it, refused if they differ."""
    folder = Path(folder)
    header = read_header(folder)
    emb = header.get("embedder") or {}
    if embedder is not None and emb.get("name") != embedder:
        raise ArtifactError(
            f"{folder}: router trained on {emb.get('name')!r} embeddings, but the embedder loaded is {embedder!r}"
        )
    if dim is not None and emb.get("dim") != dim:
        raise ArtifactError(f"{folder}: router expects {emb.get('dim')}-dimensional embeddings, the embedder gives {dim}")
    spec = header.get("arrays") or {}
    if spec.get("file") != ARRAYS or not isinstance(spec.get("sha256"), str):
        raise ArtifactError(f"{folder / HEADER}: the arrays entry must name {ARRAYS} and its sha256")
    path = folder / ARRAYS
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    blob = path.read_bytes()
    if _sha256(blob) != spec["sha256"]:
        raise ArtifactError(f"{path}: sha256 does not match the header; the file was changed or damaged, refusing to load it")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:  # object arrays need pickle, which is never allowed
        raise ArtifactError(f"{path}: holds an array that would need pickle to load; refusing") from e
    head_spec = header.get("head") or {}
    try:
        head = make_head(str(head_spec.get("kind")), head_spec.get("params") or {})
        head.load_arrays({k.removeprefix("head."): v for k, v in arrays.items() if k.startswith("head.")})
    except HeadError as e:
        raise ArtifactError(f"{folder}: {e}") from e
    features = bool(header.get("features"))
    if features and list(header["features"]) != list(FEATURE_NAMES):
        raise ArtifactError(f"{folder}: trained with features {header['features']}, this version computes {list(FEATURE_NAMES)}")
    model = RouterModel(head, str(emb.get("name")), int(emb.get("dim") or 0), features=features, meta=header)
    if features:
        model.feature_mean = arrays["features.mean"].astype(np.float32)
        model.feature_scale = arrays["features.scale"].astype(np.float32)
    model.fleet, model.fleet_step = (_correction(folder, arrays, prefix, model.dim) for prefix in ("fleet", "fleet_step"))
    if model.fleet_step is not None and model.trained_on is None:
        raise ArtifactError(f"{folder}: a fleet correction step without the router version it was trained on")
    return model


def _correction(folder: Path, arrays: dict[str, np.ndarray], prefix: str, dim: int) -> Adapter | None:
    """The fleet's correction saved under ``prefix``, checked: two finite numbers and one per embedding dimension."""
    if f"{prefix}.ab" not in arrays:
        return None
    ab, v = arrays[f"{prefix}.ab"], arrays.get(f"{prefix}.v")
    if v is None or ab.size != 2 or v.shape != (dim,) or not (np.all(np.isfinite(ab)) and np.all(np.isfinite(v))):
        raise ArtifactError(f"{folder}: the {prefix} correction must be 2 + {dim} finite numbers")
    return Adapter.from_arrays(arrays, 0, prefix)


SHIPPED = Path(__file__).resolve().parent / "routers"
# The default: chosen by bench/default_choice.py on the train splits (docs/across-sources.md, "The default router");
# blend-static, the default before it, stays shipped as the reference every candidate is measured against.
DEFAULT_ROUTER = "pair-blend-mmlu-static"


def shipped_routers() -> list[str]:
    return sorted(p.name for p in SHIPPED.iterdir() if (p / HEADER).is_file()) if SHIPPED.is_dir() else []


def default_router_path() -> Path:
    """The default router shipped inside the package: blend-static's signals drawn from four sources' train splits
    with the configured pair's expected gain on open requests, and blend-static's recipe on MMLU as one more term
    (alone on multiple-choice queries), chosen on the train splits with MMLU in the selection
    (docs/across-sources.md, "The default router")."""
    return SHIPPED / DEFAULT_ROUTER


def resolve_router(where: str | Path | None) -> Path:
    """A router folder, or the name of one shipped in the package (``pair-blend-mmlu-static``, ``blend-static``, ``shape-static``, ...)."""
    if where is None or str(where) == "":
        return default_router_path()
    if str(where) in shipped_routers():
        return SHIPPED / str(where)
    return Path(where).expanduser()
