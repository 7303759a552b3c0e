"""The condense mode's local half: keep the parts of a long prompt that the question needs.

The question is the last paragraph of the last user turn (or its last
sentence when it has one paragraph); everything before it, earlier turns
included, is context. The context is cut into passages of a few sentences,
each passage is scored by similarity to the question (the router's embedder
when there is one, word overlap otherwise), and the best passages, in their
original order, are kept up to a share of the context's tokens. It is
extractive on purpose: nothing the cloud reads was invented on the device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[a-z0-9]+")
Relevance = Callable[[str, Sequence[str]], np.ndarray]
CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Condensed:
    messages: list[dict[str, Any]]
    context_tokens: int
    kept_tokens: int
    passages: int
    kept_passages: int


def split_question(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(context, question) from the conversation."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    if last == -1:
        return "", ""
    text = messages[last]["content"].strip()
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paras) > 1:
        question, own = paras[-1], "\n\n".join(paras[:-1])
    else:
        sentences = _SENTENCE.split(text)
        question, own = sentences[-1], " ".join(sentences[:-1])
    earlier = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages[:last] if m["role"] != "system")
    return "\n\n".join(p for p in (earlier, own) if p), question


def passages(context: str, sentences_per_passage: int = 3) -> list[str]:
    out: list[str] = []
    for para in re.split(r"\n\s*\n", context):
        sents = [s for s in _SENTENCE.split(para.strip()) if s]
        for i in range(0, len(sents), sentences_per_passage):
            out.append(" ".join(sents[i : i + sentences_per_passage]))
    return [p for p in out if p.strip()]


def word_overlap(question: str, chunks: Sequence[str]) -> np.ndarray:
    q = set(_WORD.findall(question.lower()))
    return np.array([len(q & set(_WORD.findall(c.lower()))) / math.sqrt(1 + len(c.split())) for c in chunks], dtype=np.float64)


def condense(
    messages: list[dict[str, Any]], relevance: Relevance, count_tokens: CountTokens, keep: float, min_tokens: int
) -> Condensed | None:
    """The condensed conversation, or None when the prompt is short or has no context to cut."""
    context, question = split_question(messages)
    if not context or not question:
        return None
    total = count_tokens(context)
    if total < min_tokens:
        return None
    chunks = passages(context)
    if len(chunks) < 2:
        return None
    scores = relevance(question, chunks)
    budget = max(1, int(total * keep))
    kept: list[int] = []
    used = 0
    for i in np.argsort(-scores, kind="stable"):
        n = count_tokens(chunks[i])
        if used + n > budget and kept:
            continue
        kept.append(int(i))
        used += n
    excerpt = "\n...\n".join(chunks[i] for i in sorted(kept))
    system = [m for m in messages if m["role"] == "system"]
    user = {
        "role": "user",
        "content": f"Excerpts of the context, selected on the user's device for this question:\n\n{excerpt}\n\nQuestion: {question}",
    }
    return Condensed([*system, user], total, used, len(chunks), len(kept))
