"""Personal data in a message: found with patterns and checksums, so the rule can keep it on the device.

Each kind is checked the way a false alarm is cheapest to avoid: card numbers
must pass the Luhn check, IBANs the ISO 13616 mod-97 check, phone numbers need
nine to fifteen digits. Names come from a list the user configures: no model
guesses them. Pure functions, no I/O: the router calls them on every request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_NINE_DIGITS = re.compile(r"(?:\d[^\d\n]{0,3}){9}")  # cards, IBANs and phone numbers all have nine digits close together
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d ().-]{7,}\d(?!\w)")

KINDS = ("email", "iban", "card", "phone", "name")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    value: str


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    s = raw.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    clean = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    if not clean:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in clean) + r")\b", re.IGNORECASE)


class PersonalDataDetector:
    """Finds e-mail addresses, IBANs, card numbers, phone numbers and configured names; spans never overlap."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self._names = _names_pattern(names)

    def find(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        taken: list[tuple[int, int]] = []

        def add(kind: str, m: re.Match[str]) -> None:
            if any(m.start() < e and s < m.end() for s, e in taken):
                return
            taken.append((m.start(), m.end()))
            found.append(Finding(kind, m.start(), m.end(), m.group(0)))

        if "@" in text:
            for m in _EMAIL.finditer(text):
                add("email", m)
        if _NINE_DIGITS.search(text):  # one cheap scan spares three on text without long numbers
            for m in _IBAN.finditer(text):
                if _iban_ok(m.group(0)):
                    add("iban", m)
            for m in _CARD.finditer(text):
                digits = re.sub(r"\D", "", m.group(0))
                if 13 <= len(digits) <= 19 and _luhn(digits):
                    add("card", m)
            for m in _PHONE.finditer(text):
                if 9 <= len(re.sub(r"\D", "", m.group(0))) <= 15:  # E.164 numbers have at most 15 digits
                    add("phone", m)
        if self._names is not None:
            for m in self._names.finditer(text):
                add("name", m)
        return sorted(found, key=lambda f: f.start)

    def kinds(self, texts: Iterable[str]) -> tuple[str, ...]:
        """The kinds of personal data present in any of ``texts``, in a fixed order."""
        seen = {f.kind for t in texts for f in self.find(t)}
        return tuple(k for k in KINDS if k in seen)
