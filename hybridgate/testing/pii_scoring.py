"""Scores a personal-data detector on a labelled corpus (the repository's is tests/fixtures/pii_corpus.jsonl), per kind.

A labelled value is found when a finding of its kind covers it whole (the redaction then hides all of it); a
finding is a false alarm when it overlaps no labelled value of its kind. Shared by the corpus test and
bench/pii_detector.py so both judge the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Jörg Müller"]  # the names the corpus is labelled for
KINDS = ("email", "iban", "card", "phone", "name")


def load_corpus(path: Path) -> list[dict[str, Any]]:
    """One labelled row a line (text, spans of kind/start/end, form, option): the file lives with the tests, and
    is not installed with the package."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class KindScore:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0


def score(find: Callable[[str], Iterable[Any]], rows: list[dict[str, Any]]) -> dict[str, KindScore]:
    """Per-kind counts of ``find`` (text -> findings with kind, start, end) over ``rows``."""
    out = {k: KindScore() for k in KINDS}
    for r in rows:
        found = list(find(r["text"]))
        for s in r["spans"]:
            if any(f.kind == s["kind"] and f.start <= s["start"] and f.end >= s["end"] for f in found):
                out[s["kind"]].tp += 1
            else:
                out[s["kind"]].fn += 1
                out[s["kind"]].misses.append(f"{r['form']}: {r['text']!r} -> {[(f.kind, f.value) for f in found]}")
        for f in found:
            if not any(f.kind == s["kind"] and f.start < s["end"] and s["start"] < f.end for s in r["spans"]):
                out[f.kind].fp += 1
                out[f.kind].false_alarms.append(f"{r['form']}: {r['text']!r} -> {f.value!r}")
    return out
