"""Personal data in a message: found with patterns and checksums, so the rule can keep it on the device.

Each kind is checked the way a false alarm is cheapest to avoid: card numbers
must pass the Luhn check, IBANs the ISO 13616 mod-97 check, phone numbers need
nine to fifteen digits. Names come from a list the user configures: no model
guesses them. Pure functions, no I/O: the router calls them on every request.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

_SEP = r"[ .\-\u00a0\u2009\u202f]"  # what people put between the groups of a number: spaces (also non-breaking), dots, dashes
_CARD = re.compile(r"(?<!\d)(?:\d" + _SEP + r"{0,2}){12,18}\d(?!\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}" + _SEP + r"{0,2}\d{2}(?:" + _SEP + r"{0,2}[A-Za-z0-9]){11,30}")
_NINE_DIGITS = re.compile(r"(?:\d[^\d\n]{0,3}){9}")  # cards, IBANs and phone numbers all have nine digits close together
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d ().\-\u00a0]{7,24}\d(?!\w)")
_WINDOW, _OVERLAP = 16_384, 512  # every pattern's match is far shorter than the overlap
_LOCAL_MAX, _DOMAIN_MAX = 64, 255  # RFC 5321 limits: what bounds the e-mail scan, so it is linear in the text
_LOCAL_CHARS = frozenset("._%+-'")
_TLD = re.compile(r"[^\W\d_]{2,63}")

KINDS = ("email", "iban", "card", "phone", "name")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    value: str


def _finditer(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``, one window of text at a time.

    One regular-expression call holds the interpreter lock from start to end: over a 600 KB message that is
    tens of milliseconds during which no other thread (the event loop serving /healthz among them) runs. In
    windows, the lock is released between calls. Lookbehinds still see the text before a window (``pos``);
    every match is shorter than the overlap, so none is cut at a window's end.
    """
    n = len(text)
    if n <= _WINDOW + _OVERLAP:
        yield from pattern.finditer(text)
        return
    start, last_end = 0, 0
    while start < n:
        end = min(n, start + _WINDOW + _OVERLAP)
        for m in pattern.finditer(text, max(start, last_end), end):
            if m.start() >= start + _WINDOW and end < n:
                break  # the next window finds it, with the text after it in view
            last_end = m.end()
            yield m
        start += _WINDOW


def _search(pattern: re.Pattern[str], text: str) -> bool:
    return next(_finditer(pattern, text), None) is not None


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ISO 13616 registry: the length of an IBAN in each country that issues them. A candidate is checked at its
# country's length only, so ordinary text passes the mod-97 check by chance once in 97 candidates, not 20.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def _mod97(s: str) -> bool:
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_span(m: re.Match[str]) -> tuple[int, int] | None:
    """The longest prefix of a candidate that is a valid IBAN (15-34 characters, any case, any grouping)."""
    ends: list[int] = []  # ends[k]: where the (k+1)-th letter or digit of the candidate ends
    chars: list[str] = []
    for i, ch in enumerate(m.group(0)):
        if ch.isalnum():
            chars.append(ch.upper())
            ends.append(m.start() + i + 1)
    n = IBAN_LENGTHS.get("".join(chars[:2]))
    if n is None or len(chars) < n or not chars[2].isdigit() or not chars[3].isdigit():
        return None
    if n < len(chars) and ends[n] == ends[n - 1] + 1:
        return None  # the letters and digits run on without a break: a longer token, not an IBAN
    return (m.start(), ends[n - 1]) if _mod97("".join(chars[:n])) else None


def _emails(text: str) -> list[tuple[int, int]]:
    """E-mail addresses, non-ASCII ones included, found by scanning out from each '@' within the RFC's length
    limits: a backtracking pattern took minutes on a crafted 600 KB message."""
    out: list[tuple[int, int]] = []
    n = len(text)
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start < _LOCAL_MAX and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_CHARS):
            start -= 1
        while start < at and text[start] in _LOCAL_CHARS:  # an address does not start with a dot or a dash
            start += 1
        end = at + 1
        while end < n and end - at <= _DOMAIN_MAX and (text[end].isalnum() or text[end] in ".-"):
            end += 1
        while end > at + 1 and text[end - 1] in ".-":
            end -= 1
        domain = text[at + 1 : end]
        labels = domain.split(".")
        if start < at and len(labels) >= 2 and all(labels) and _TLD.fullmatch(labels[-1]):
            out.append((start, end))
        at = text.find("@", max(end, at + 1))
    return out


def _names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    clean = sorted({" ".join(n.split()) for n in names if n.strip()}, key=len, reverse=True)
    if not clean:
        return None
    # Any run of white space (a newline, a non-breaking space) may stand between the words of a name.
    alternatives = (r"\s{1,4}".join(re.escape(part) for part in n.split(" ")) for n in clean)
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


class PersonalDataDetector:
    """Finds e-mail addresses, IBANs, card numbers, phone numbers and configured names; spans never overlap."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self._names = _names_pattern(names)

    def find(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        taken: list[tuple[int, int]] = []

        def add(kind: str, start: int, end: int) -> None:
            # ``taken`` holds non-overlapping spans in order, so one look at each neighbour decides (a text with
            # a hundred thousand findings must not cost a hundred thousand squared).
            i = bisect.bisect_left(taken, (start, end))
            if (i > 0 and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
                return
            taken.insert(i, (start, end))
            found.append(Finding(kind, start, end, text[start:end]))

        if "@" in text:
            for start, end in _emails(text):
                add("email", start, end)
        if _search(_NINE_DIGITS, text):  # one cheap scan spares three on text without long numbers
            for m in _finditer(_IBAN, text):
                span = _iban_span(m)
                if span is not None:
                    add("iban", *span)
            for m in _finditer(_CARD, text):
                digits = re.sub(r"\D", "", m.group(0))
                if 13 <= len(digits) <= 19 and _luhn(digits):
                    add("card", m.start(), m.end())
            for m in _finditer(_PHONE, text):
                if 9 <= len(re.sub(r"\D", "", m.group(0))) <= 15:  # E.164 numbers have at most 15 digits
                    add("phone", m.start(), m.end())
        if self._names is not None:
            for m in _finditer(self._names, text):
                add("name", m.start(), m.end())
        return sorted(found, key=lambda f: f.start)

    def kinds(self, texts: Iterable[str]) -> tuple[str, ...]:
        """The kinds of personal data present in any of ``texts``, in a fixed order."""
        seen = {f.kind for t in texts for f in self.find(t)}
        return tuple(k for k in KINDS if k in seen)
