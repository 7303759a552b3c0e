"""What a query asks for, not what it is about: the signals that carry over to unseen kinds of traffic.

An embedding says which topic a query belongs to, and a head trained on it
learns how two models did on *those* topics: that does not carry over to a
user's traffic. These features describe the query's shape instead: how long it
is, whether it carries code or mathematics, whether it asks for steps, a proof
or a long answer, whether it is creative writing, an extraction or a lookup,
and how deep the conversation is. A small model fails on the first kind and
copes with the second whatever the topic, so they hold on queries of kinds
never seen in training.

Every pattern is bounded (no nested quantifiers, no unbounded lookbehind) and a
query is read up to :data:`MAX_CHARS` characters, so scanning is linear in the
text and cheap: the features of a 200-token prompt take well under a millisecond.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CHARS = 20_000  # longer queries are read at their start (the last user turn comes first)

_I = re.I
_CODE_MARKUP = re.compile(
    r"```|^\s{0,8}(?:def|class|import|from|return|public|private|static|const|let|var|func|fn)\b|#include|=>|->|::|"
    r"\b\w{1,40}\([^()\n]{0,80}\)\s*[{:;]|[{};]\s*$|\bSELECT\b[^\n]{0,200}\bFROM\b|Traceback \(most recent|\bstack trace\b",
    re.M,
)
_CODE_ASK = re.compile(
    r"\b(?:python|javascript|typescript|java|c\+\+|c#|rust|golang|kotlin|swift|sql|bash|shell script|regex|regular expression|"
    r"html|css|json schema|api|function|method|algorithm|program|script|code|coding|compile|debug|bug|refactor|unit tests?|"
    r"implement|recursion|recursive|data structure|linked list|binary tree|hash ?map|complexity)\b",
    _I,
)
_MATH_MARKUP = re.compile(r"\$[^$\n]{1,200}\$|\\(?:frac|sqrt|sum|int|prod|lim|cdot|times|leq|geq|infty)|\d\s{0,2}[-+*/^×÷=<>]\s{0,2}[\d(x-z]|[x-z]\^\d|\b[a-z]\s?=\s?-?\d", _I)
_MATH_ASK = re.compile(
    r"\b(?:solve|calculate|compute|evaluate|simplify|integral|integrate|derivative|differentiate|equation|inequality|"
    r"probability|expected value|theorem|prove|proof|lemma|matrix|eigen\w{0,8}|polynomial|logarithm|factori[sz]e|"
    r"how many|what is the (?:sum|product|value|probability|area|volume|remainder)|modulo|prime|geometric|arithmetic)\b",
    _I,
)
_STEPS = re.compile(
    r"\b(?:step[- ]by[- ]step|steps?|explain (?:why|how)|why\b|reason(?:ing)?|derive|justify|analy[sz]e|compare|contrast|"
    r"trade-?offs?|evaluate|design|plan|strategy|pros and cons|critique|argue|implications?)\b",
    _I,
)
_CONSTRAINTS = re.compile(
    r"\b(?:must|exactly|at least|at most|no more than|without|only use|do not|don't|never|ensure|make sure|"
    r"constraints?|requirements?|each|every|all of)\b",
    _I,
)
_NEGATION = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|never|incorrect|cannot)\b")
_LONG_ANSWER = re.compile(
    r"\b(?:essay|detailed|in detail|comprehensive|thorough|elaborate|report|full (?:code|implementation|solution)|"
    r"\d{3,4}[- ]words?|several paragraphs|multiple paragraphs)\b",
    _I,
)
_SHORT_ANSWER = re.compile(
    r"\b(?:one word|single word|one sentence|a sentence|briefly|brief|short|in a few words|yes or no|true or false|"
    r"just (?:the|a) (?:name|number|answer)|tl;?dr|one-liner)\b",
    _I,
)
_CHOICES = re.compile(r"^\s{0,4}\(?[A-J][.)]\s", re.M)
_EXTRACTION = re.compile(
    r"\b(?:extract|summari[sz]e|summary|from the (?:following|text|passage|article|document|email)|"
    r"list (?:all|the)|identify (?:all|the)|find (?:all|the)|classify|categori[sz]e|translate|rewrite|paraphrase|"
    r"fix the grammar|proofread|convert|format (?:this|the|it)|as json|in json|json format|table)\b",
    _I,
)
_CREATIVE = re.compile(
    r"\b(?:poem|poetry|haiku|limerick|sonnet|song|lyrics|story|stories|fairy tale|fiction|novel|script for|dialogue|"
    r"imagine|pretend|role-?play|act as|you are an? |in the style of|character|slogan|tagline|joke|riddle|"
    r"birthday|greeting|toast|wedding|invitation|thank[- ]you note|cover letter|blog post|tweet|caption|creative)\b",
    _I,
)
_LOOKUP = re.compile(
    r"^\s{0,4}(?:what|who|when|where|which|name|define|what's|whats)\b[^\n]{0,120}\?\s*$|"
    r"\b(?:capital of|stand for|meaning of|definition of|synonym|antonym|spell|how do you say)\b",
    _I | re.M,
)
_GREETING = re.compile(r"^\s{0,4}(?:hi|hello|hey|thanks|thank you|good (?:morning|evening|night)|how are you)\b", _I)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True)
class ShapeFeature:
    """One feature, and the direction a small local model's failure is expected to move with it.

    ``prior`` is the weight (log-odds per unit of the feature) that the router
    starts from before any data: the transparent rule, written down. Training
    moves a weight away from it only as far as labelled rows support; a
    feature the training data never shows keeps its prior.
    ``sign`` +1 / -1 constrains the fitted weight to that side of zero (0: free).
    """

    name: str
    prior: float
    sign: int
    why: str


FEATURES: tuple[ShapeFeature, ...] = (
    ShapeFeature("length", 0.45, +1, "log words: longer queries hold more to get wrong"),
    ShapeFeature("code", 0.9, +1, "code markup or a programming request"),
    ShapeFeature("math", 0.9, +1, "formulas, arithmetic or a mathematical task"),
    ShapeFeature("numbers", 0.2, +1, "log count of numbers in the query"),
    ShapeFeature("steps", 0.5, +1, "asks for reasons, steps, analysis or a design"),
    ShapeFeature("constraints", 0.25, +1, "log count of constraints the answer must meet"),
    ShapeFeature("negation", 0.3, +1, "asks for the exception (NOT, EXCEPT, LEAST)"),
    ShapeFeature("long_answer", 0.4, +1, "asks for a long or detailed answer"),
    ShapeFeature("short_answer", -0.4, -1, "asks for a word, a sentence, yes or no"),
    ShapeFeature("choices", 0.0, 0, "offers lettered options (multiple choice)"),
    ShapeFeature("extraction", -0.5, -1, "extract, summarise, rewrite or translate a given text"),
    ShapeFeature("creative", -1.0, -1, "creative writing or role-play: no single right answer to miss"),
    ShapeFeature("lookup", -0.6, -1, "a short factual lookup or definition"),
    ShapeFeature("greeting", -1.5, -1, "small talk"),
    ShapeFeature("turns", 0.3, +1, "log of earlier turns in the conversation"),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
PRIOR = np.array([f.prior for f in FEATURES], dtype=np.float64)
SIGNS = np.array([f.sign for f in FEATURES], dtype=np.int8)


def shape_features(text: str, n_messages: int = 1) -> np.ndarray:
    """The :data:`FEATURES` of one query, in order, as float32."""
    t = text[:MAX_CHARS]
    words = len(t.split())
    head = t[:2_000]  # what is asked sits at the start; a pasted document after it does not change the ask
    return np.array(
        [
            math.log1p(words),
            min(1.0, 0.5 * len(_CODE_MARKUP.findall(t)) + 0.5 * bool(_CODE_ASK.search(head))),
            min(1.0, 0.25 * len(_MATH_MARKUP.findall(t)) + 0.5 * bool(_MATH_ASK.search(head))),
            math.log1p(len(_NUMBER.findall(t))),
            float(bool(_STEPS.search(head))),
            math.log1p(len(_CONSTRAINTS.findall(head))),
            float(bool(_NEGATION.search(head))),
            float(bool(_LONG_ANSWER.search(head))),
            float(bool(_SHORT_ANSWER.search(head))),
            float(len(_CHOICES.findall(t)) >= 2),
            float(bool(_EXTRACTION.search(head))),
            float(bool(_CREATIVE.search(head))),
            float(words <= 40 and bool(_LOOKUP.search(head))),
            float(words <= 12 and bool(_GREETING.search(head))),
            math.log1p(max(0, n_messages - 1)),
        ],
        dtype=np.float32,
    )


def shape_matrix(texts: Sequence[str], turns: Sequence[int] | None = None) -> np.ndarray:
    if not texts:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    n = turns if turns is not None else [1] * len(texts)
    return np.stack([shape_features(t, m) for t, m in zip(texts, n, strict=True)])
