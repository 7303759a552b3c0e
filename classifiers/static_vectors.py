"""Static word-piece vectors, served through model2vec: a query's vector with numpy and a tokenizer only.

The default router reads a query through a *static* embedder: one vector per
word piece, looked up and averaged. Serving it needs no transformer, no torch
and no ONNX runtime, which is what lets the gateway run on a small device; the
vectors are stored in model2vec's layout (``model.safetensors``,
``tokenizer.json``, ``config.json``) and read by model2vec, the maintained
library for such models.

The vectors of the default router ship inside the package
(:data:`SHIPPED`). They are made by :func:`distil_static` (``hybridgate router
distill``, under the ``train`` extra): each word piece of the transformer's
vocabulary is run through the transformer alone, between ``[CLS]`` and
``[SEP]``, and the piece's own output vector is kept. Optionally the table is
projected onto its principal components and stored as int8 to make it smaller.
A folder made that way for any other model works the same: name the folder as
the router's embedder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from hybridgate.classifiers.embedder import Embedder

log = logging.getLogger(__name__)

STATIC_SUFFIX = "-static"
MAX_PIECES = 512  # a longer query keeps its first pieces (the gateway puts the last user turn first)
SHIPPED = Path(__file__).resolve().parent / "vectors"
_LAYOUT = ("model.safetensors", "tokenizer.json", "config.json")

Dtype = Literal["float16", "float32", "int8"]


class EmbedderError(ValueError):
    """The embedding model cannot be found or loaded; the message says which and why."""


def is_static_folder(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _LAYOUT) and _config(path).get("model_type") == "model2vec"


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def shipped_folder(name: str) -> Path | None:
    """The folder of vectors that came with the package under ``name``, if any."""
    folder = SHIPPED / name
    return folder if is_static_folder(folder) else None


def cache_root() -> Path:
    """Where hybridgate keeps what it derives once (ONNX exports, distilled vectors, prompt vectors)."""
    root = os.environ.get("HYBRIDGATE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hybridgate"
    )
    return Path(root)


def cache_folder(name: str) -> Path:
    return cache_root() / "static" / name


class StaticEmbedder:
    """model2vec's StaticModel behind the project's :class:`~hybridgate.classifiers.embedder.Embedder` shape."""

    engine = "static"

    def __init__(self, folder: Path) -> None:
        if not is_static_folder(folder):
            raise EmbedderError(f"{folder}: not a folder of static vectors (model.safetensors, tokenizer.json, config.json of model2vec)")
        from model2vec import StaticModel

        # from_pretrained falls back to a model hub for a path that does not exist: the check above rules that out.
        # Vectors stored as float16 or int8 are widened once: model2vec averages in the stored type, and a
        # float16 average is unit length only to 1e-5 and moves scores near the threshold.
        self._model = StaticModel.from_pretrained(folder, normalize=True, quantize_to="float32")
        # model2vec drops [UNK] pieces (meant for word-level vocabularies); a word-piece [UNK] marks characters the
        # vocabulary lacks, and the shipped routers were trained with it: keep it, so vectors stay the same.
        self._model.unk_token_id = None
        cfg = _config(folder)
        self.folder = folder
        self.name = str(cfg.get("hybridgate_name") or folder.name)
        self.dim = int(self._model.dim)
        self.max_seq_length = MAX_PIECES

    @functools.cached_property
    def fingerprint(self) -> str:
        """What cached prompt vectors are keyed by besides the name: the stored table and how it is averaged
        (read on first use: the gateway never needs it)."""
        digest = hashlib.sha256(b"float32-mean-with-unk")
        with (self.folder / "model.safetensors").open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:12]

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), max_length=MAX_PIECES, use_multiprocessing=False, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


def static_name(model: str, dims: int | None, dtype: Dtype) -> str:
    """What routers trained on these vectors record as their embedder: the model, then any reduction."""
    return f"{model}{STATIC_SUFFIX}" + (f"-pca{dims}" if dims else "") + ("-int8" if dtype == "int8" else "")


def distil_static(
    transformer: Embedder,
    tokenizer_path: Path,
    out: Path,
    *,
    name: str,
    dims: int | None = None,
    dtype: Dtype = "float16",
) -> Path:
    """Distil a transformer into static vectors and write them in model2vec's layout, atomically."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    from hybridgate.classifiers.embedder import build_static_table

    tok = Tokenizer.from_file(str(tokenizer_path))
    table = build_static_table(transformer, tok.get_vocab_size(), tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")).astype(np.float32)
    info: dict[str, Any] = {"hybridgate_name": name, "hybridgate_source": transformer.name, "hybridgate_method": "piece-outputs"}
    if dims:
        if not 0 < dims < table.shape[1]:
            raise EmbedderError(f"--dims must be between 1 and {table.shape[1] - 1}, got {dims}")
        # Principal components of the pieces' vectors: the mean is kept (queries are averages of pieces, and a
        # shared offset is part of every one of them), the directions of least variance are dropped.
        centred = table - table.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        table = table @ vt[:dims].T
        info["hybridgate_pca_dims"] = dims
    if dtype == "int8":
        scale = float(np.abs(table).max()) / 127.0
        stored: np.ndarray = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    else:
        stored = table.astype(np.float16 if dtype == "float16" else np.float32)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    StaticModel(stored, tok, config={"model_type": "model2vec", "normalize": True, **info}, normalize=True).save_pretrained(tmp)
    # model2vec writes a generic model card (with a license that need not be the source model's): say what this is.
    (tmp / "README.md").write_text(
        f"---\nlibrary_name: model2vec\nbase_model: {transformer.name}\n---\n\n# {name}\n\nStatic word-piece vectors distilled from {transformer.name} by `hybridgate router distill`: each piece's own "
        f"output of the transformer{f', projected onto {dims} principal components' if dims else ''}, stored as {dtype}. "
        "The source model's license applies.\n",
        encoding="utf-8",
    )
    for f in tmp.iterdir():
        f.chmod(0o644)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
