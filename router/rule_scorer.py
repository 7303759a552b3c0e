"""A transparent complexity score for when no trained classifier is loaded.

Every feature is visible in the code and adds a fixed amount, so a user can
predict the route of a query by reading this file. The trained embedding
classifier replaces it through the same :class:`~hybridgate.router.Scorer` seam.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hybridgate.router.decision import RouteQuery, Signal

_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+|\bfunction\b|#include|\bSELECT\b.+\bFROM\b|=>|;\s*$", re.M | re.I)
_MATH = re.compile(
    r"\b(prove|proof|integral|derivative|theorem|equation|matrix|eigen\w*|probability|lemma)\b|\\frac|\\sum|\d\s*[\^*/]\s*\d",
    re.I,
)
_REASONING = re.compile(
    r"\b(why|explain|analy[sz]e|compare|step[- ]by[- ]step|derive|design|evaluate|trade-?offs?|justify|plan)\b", re.I
)


@dataclass(frozen=True)
class RuleScorer:
    """Length, code, math and reasoning markers, each adding a fixed share of the score."""

    long_prompt_tokens: int = 300
    name: str = "rules-v1"

    def score(self, query: RouteQuery) -> float:
        return self.score_explained(query)[0]

    def score_explained(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...]]:
        parts = [("length", 0.4 * min(query.prompt_tokens / self.long_prompt_tokens, 1.0))]
        if _CODE.search(query.text):
            parts.append(("code", 0.2))
        if _MATH.search(query.text):
            parts.append(("math", 0.2))
        if _REASONING.search(query.text):
            parts.append(("reasoning", 0.2))
        if query.n_messages > 6:
            parts.append(("turns", 0.1))
        s = min(0.1 + sum(p for _, p in parts), 1.0)
        top = sorted((p for p in parts if p[1] >= 0.005), key=lambda p: -p[1])[:3]
        return s, tuple(Signal(n, round(v, 3)) for n, v in top)
