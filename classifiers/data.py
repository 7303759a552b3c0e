"""Logged routing outcomes in the RouteLLM format: a ``prompt`` column and one True/False column per model.

A folder of such CSV files (or a list of files) is one data set. A row's group
is its ``subject`` column when there is one, else its file's name
(``mmlu_anatomy``): the "subject prior" baseline learns from it. A ``contaminated_prompts.jsonl`` in
the folder or its parent (field ``eval_prompt``) names prompts to drop, as RouteLLM does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["train", "test", "all"]
TRAIN_FRACTION = 0.10
CONTAMINATED_FILE = "contaminated_prompts.jsonl"
_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f"}

# MMLU prompts with long passages are larger than csv's default field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DataError(ValueError):
    """The data cannot be read as routing outcomes; the message names the file and the problem."""


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def split_of(prompt: str) -> Literal["train", "test"]:
    """The benchmark's split: train when the first 8 hex digits of sha256, over 2**32, are below 0.10."""
    return "train" if int(prompt_sha256(prompt)[:8], 16) / 2**32 < TRAIN_FRACTION else "test"


@dataclass(frozen=True)
class RoutingData:
    """One row a question: its prompt, group, and whether each of the two models answered it well."""

    prompts: tuple[str, ...]
    groups: tuple[str, ...]
    weak: np.ndarray  # bool
    strong: np.ndarray  # bool
    weak_name: str
    strong_name: str
    source: str
    dropped_contaminated: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def label(self) -> np.ndarray:
        """1 where the cloud is needed: the strong model right and the weak one wrong."""
        return (self.strong & ~self.weak).astype(np.int8)

    @property
    def sha256(self) -> list[str]:
        return [prompt_sha256(p) for p in self.prompts]

    def subset(self, split: Split) -> RoutingData:
        if split == "all":
            return self
        keep = np.array([split_of(p) == split for p in self.prompts], dtype=bool)
        return self.take(keep)

    def take(self, mask: np.ndarray) -> RoutingData:
        idx = np.nonzero(mask)[0]
        return RoutingData(
            tuple(self.prompts[i] for i in idx),
            tuple(self.groups[i] for i in idx),
            self.weak[idx],
            self.strong[idx],
            self.weak_name,
            self.strong_name,
            self.source,
            self.dropped_contaminated,
        )

    def fingerprint(self) -> str:
        """sha256 over the rows in order, so an artifact can name exactly what it was trained on."""
        h = hashlib.sha256()
        for p, w, s in zip(self.prompts, self.weak, self.strong, strict=True):
            h.update(prompt_sha256(p).encode())
            h.update(b"1" if w else b"0")
            h.update(b"1" if s else b"0")
        return h.hexdigest()


def _csv_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("*.csv"))
            if not found:
                raise DataError(f"{p}: no .csv files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


def _contaminated(paths: Sequence[Path], extra: Iterable[Path]) -> set[str]:
    # RouteLLM keeps the list beside its responses/ folder, so the parent of a given folder is looked in too.
    near = {q / CONTAMINATED_FILE for p in paths if p.is_dir() for q in (p, p.resolve().parent)}
    candidates = sorted(near) + list(extra)
    out: set[str] = set()
    for f in candidates:
        if not f.is_file():
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.add(json.loads(line)["eval_prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{f}:{n}: expected a JSON object with an 'eval_prompt' field") from e
    return out


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DataError(f"{where}: expected True or False, got {value!r}")


def load_routing_data(
    paths: Path | Sequence[Path],
    weak: str,
    strong: str,
    *,
    exclude: Iterable[Path] = (),
) -> RoutingData:
    """Read every CSV under ``paths``; rows with an empty prompt or outcome are an error, not skipped."""
    roots = [paths] if isinstance(paths, Path) else [Path(p) for p in paths]
    files = _csv_files(roots)
    drop = _contaminated(roots, exclude)
    prompts: list[str] = []
    groups: list[str] = []
    w_col: list[bool] = []
    s_col: list[bool] = []
    dropped = 0
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            missing = [c for c in ("prompt", weak, strong) if c not in cols]
            if missing:
                have = ", ".join(cols) or "none"
                raise DataError(f"{f}: missing column(s) {', '.join(missing)}; the columns are {have}")
            has_subject = "subject" in cols
            for line, row in enumerate(reader, 2):
                prompt = row["prompt"]
                if not prompt:
                    raise DataError(f"{f}:{line}: empty prompt")
                if prompt in drop:
                    dropped += 1
                    continue
                prompts.append(prompt)
                groups.append(row["subject"] if has_subject and row["subject"] else f.stem)
                w_col.append(_bool(row[weak] or "", f"{f}:{line} column {weak}"))
                s_col.append(_bool(row[strong] or "", f"{f}:{line} column {strong}"))
    if not prompts:
        raise DataError(f"{', '.join(map(str, roots))}: no rows")
    return RoutingData(
        tuple(prompts),
        tuple(groups),
        np.array(w_col, dtype=bool),
        np.array(s_col, dtype=bool),
        weak,
        strong,
        ", ".join(map(str, roots)),
        dropped,
    )


def concat(sets: Sequence[RoutingData]) -> RoutingData:
    """Several labelled sets as one, each row keeping its own set's weak/strong outcomes.

    A router can then learn from more than one source (say MMLU with one pair of
    models and MMLU-Pro with another): the label of a row is always "this set's
    cloud model was needed where this set's local model failed".
    """
    if not sets:
        raise DataError("no data sets given")
    if len(sets) == 1:
        return sets[0]
    return RoutingData(
        tuple(p for d in sets for p in d.prompts),
        tuple(g for d in sets for g in d.groups),
        np.concatenate([d.weak for d in sets]),
        np.concatenate([d.strong for d in sets]),
        " | ".join(d.weak_name for d in sets),
        " | ".join(d.strong_name for d in sets),
        " | ".join(d.source for d in sets),
        sum(d.dropped_contaminated for d in sets),
    )


def load_prompts(paths: Path | Sequence[Path]) -> list[str]:
    """Only the ``prompt`` column: what calibration needs from a user's own logs, no outcomes required."""
    roots = [paths] if isinstance(paths, Path) else [Path(p) for p in paths]
    out: list[str] = []
    for f in _csv_files(roots):
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "prompt" not in (reader.fieldnames or []):
                raise DataError(f"{f}: no 'prompt' column")
            out.extend(row["prompt"] for row in reader if row["prompt"])
    if not out:
        raise DataError(f"{', '.join(map(str, roots))}: no prompts")
    return out
