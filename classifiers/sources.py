"""Labelled sources with many models: a ``prompt`` column, a task column, and one outcome column per model.

The across-sources protocols (``shared/docs/routing-benchmark.md``, *Across
sources*) learn from every model column of every source at once, so a source is
read whole here, not as one weak/strong pair (:mod:`.data` reads a pair). Cells
are graded: ``True``/``False`` read as 1/0, a number in [0, 1] as itself
(AlpacaEval's preference against GPT-4-Turbo), an empty cell as missing (NaN).

Each source has its own split cut (:data:`SPLIT_CUTS`: 0.10 for the two exams,
0.50 for the two smaller sets) under the sha256 rule of :func:`.data.split_of`,
and rows of the MMLU family (``routellm-mmlu``, ``mmlu-pro`` and ``llmrouter``'s
``mmlu`` task share questions) are marked so a protocol can keep them out of
training whenever one of them is scored.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridgate.classifiers.data import DataError, _contaminated, _csv_files, prompt_sha256

SPLIT_CUTS: dict[str, float] = {"routellm-mmlu": 0.10, "mmlu-pro": 0.10, "alpacaeval": 0.50, "llmrouter": 0.50}
DEFAULT_CUT = 0.10
MMLU_FAMILY = ("routellm-mmlu", "mmlu-pro")  # whole sources; llmrouter joins through its rows of task "mmlu"
GROUP_COLUMNS = ("subject", "task", "dataset")

# The pairs the benchmark scores in each source (weak -> strong).
PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "routellm-mmlu": (("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"),),
    "mmlu-pro": (("Mixtral-8x7B-Instruct-v0.1", "gpt-4o-2024-05-13"),),
    "alpacaeval": (
        ("Mixtral-8x7B-Instruct-v0.1_concise", "gpt4_1106_preview"),
        ("FuseChat-Llama-3.2-1B-Instruct", "gpt4_1106_preview"),
    ),
    "llmrouter": (
        ("mistral-7b-instruct-v0.3", "llama-3.1-nemotron-51b-instruct"),
        ("qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"),
    ),
}
# The held-out model of the *new model* protocol, per source, and the pair it is scored in.
NEW_MODEL_PAIRS: dict[str, tuple[str, str]] = {
    "mmlu-pro": ("Phi-3-mini-4k-instruct", "gpt-4o-2024-05-13"),
    "alpacaeval": ("FuseChat-Llama-3.2-1B-Instruct", "gpt4_1106_preview"),
    "llmrouter": ("qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"),
}


def split_cut(source: str) -> float:
    return SPLIT_CUTS.get(source, DEFAULT_CUT)


def in_train(prompt: str, cut: float) -> bool:
    """The benchmark's sha256 rule with this source's cut."""
    return int(prompt_sha256(prompt)[:8], 16) / 2**32 < cut


def _cell(value: str, where: str) -> float:
    v = value.strip()
    if not v:
        return math.nan
    low = v.lower()
    if low in ("true", "t", "yes"):
        return 1.0
    if low in ("false", "f", "no"):
        return 0.0
    try:
        x = float(v)
    except ValueError as e:
        raise DataError(f"{where}: expected True, False or a number in [0, 1], got {value!r}") from e
    if not 0.0 <= x <= 1.0:
        raise DataError(f"{where}: an outcome is in [0, 1], got {x}")
    return x


@dataclass(frozen=True)
class Source:
    """One source: its rows, each model's graded outcome on each row (NaN: not graded), its split and MMLU rows."""

    name: str
    prompts: tuple[str, ...]
    groups: tuple[str, ...]
    models: tuple[str, ...]
    outcomes: np.ndarray  # (rows, models) float64, NaN where missing
    cut: float
    dropped_contaminated: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def sha256(self) -> list[str]:
        return [prompt_sha256(p) for p in self.prompts]

    @property
    def train(self) -> np.ndarray:
        return np.array([in_train(p, self.cut) for p in self.prompts], dtype=bool)

    @property
    def mmlu_rows(self) -> np.ndarray:
        """Rows that share questions with MMLU: the whole source for the two exams, the ``mmlu`` task elsewhere."""
        if self.name in MMLU_FAMILY:
            return np.ones(len(self), dtype=bool)
        return np.array([g == "mmlu" for g in self.groups], dtype=bool)

    def column(self, model: str) -> np.ndarray:
        if model not in self.models:
            raise DataError(f"{self.name}: no model column {model!r}; the models are {', '.join(self.models)}")
        return self.outcomes[:, self.models.index(model)]

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return PAIRS.get(self.name, ())


def load_source(path: Path, *, name: str | None = None, cut: float | None = None, models: Sequence[str] | None = None) -> Source:
    """Read a source folder (or CSV file); every column but ``prompt`` and the task columns is a model.

    ``models`` restricts the columns read (all when None). A row whose prompt is
    empty is an error; a contaminated prompt (``contaminated_prompts.jsonl``
    beside the files, as :mod:`.data` reads it) is dropped.
    """
    path = Path(path)
    files = _csv_files([path])
    drop = _contaminated([path], ())
    src_name = name or (path.name if path.is_dir() else path.parent.name)
    prompts: list[str] = []
    groups: list[str] = []
    rows: list[list[float]] = []
    columns: list[str] | None = None
    dropped = 0
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            if "prompt" not in cols:
                raise DataError(f"{f}: no 'prompt' column; the columns are {', '.join(cols) or 'none'}")
            group_col = next((c for c in GROUP_COLUMNS if c in cols), None)
            here = [c for c in cols if c != "prompt" and c not in GROUP_COLUMNS]
            if models is not None:
                missing = [m for m in models if m not in here]
                if missing:
                    raise DataError(f"{f}: missing model column(s) {', '.join(missing)}; the models are {', '.join(here)}")
                here = list(models)
            if columns is None:
                columns = here
            elif set(here) != set(columns):
                raise DataError(f"{f}: its model columns differ from the first file's ({', '.join(columns)})")
            for line, row in enumerate(reader, 2):
                prompt = row["prompt"]
                if not prompt:
                    raise DataError(f"{f}:{line}: empty prompt")
                if prompt in drop:
                    dropped += 1
                    continue
                prompts.append(prompt)
                groups.append(row[group_col] if group_col and row[group_col] else f.stem)
                rows.append([_cell(row[c] or "", f"{f}:{line} column {c}") for c in columns])
    if not prompts or not columns:
        raise DataError(f"{path}: no rows or no model columns")
    return Source(
        src_name,
        tuple(prompts),
        tuple(groups),
        tuple(columns),
        np.array(rows, dtype=np.float64),
        split_cut(src_name) if cut is None else cut,
        dropped,
    )
