"""Cheap text features that exist at request time, appended to the embedding.

The embedding says what a query is about; these say how it is built: its
length, how much of it is numbers or formulas, whether it carries code, and
whether it asks for the exception ("which is NOT ...") that small models miss.
They are computed from the text alone, so training and serving see the same
numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_MATH = re.compile(r"[=<>^+*/]|\\frac|\\sqrt|\bsqrt\b|\d\s*[x×]\s*\d|\b(?:log|sin|cos|tan|mod|lim)\b")
_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+|#include|\breturn\b|[{};]\s*$|\bSELECT\b", re.M)
_NEGATION = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|never|incorrect)\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "lines",
    "digit_share",
    "numbers",
    "math_marks",
    "code_marks",
    "negations",
    "question_marks",
)


def text_features(text: str) -> np.ndarray:
    chars = len(text)
    words = len(text.split())
    digits = sum(c.isdigit() for c in text)
    return np.array(
        [
            math.log1p(chars),
            math.log1p(words),
            math.log1p(text.count("\n")),
            digits / max(chars, 1),
            math.log1p(len(_NUMBER.findall(text))),
            math.log1p(len(_MATH.findall(text))),
            math.log1p(len(_CODE.findall(text))),
            math.log1p(len(_NEGATION.findall(text))),
            math.log1p(text.count("?")),
        ],
        dtype=np.float32,
    )


def feature_matrix(texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, len(NAMES)), dtype=np.float32)
    return np.stack([text_features(t) for t in texts])
