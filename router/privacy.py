"""Personal data in a message: found with patterns and checksums, so the rule can keep it on the device.

Real text hides data in ways a plain pattern misses, so the text is first normalised (NFKC: full-width
``＠`` and digits, ``﹫``, non-breaking spaces; zero-width characters and soft hyphens dropped; ``%40``,
``&#64;`` and ``&commat;`` read as ``@``) and every finding is mapped back to the original text, so the
redaction replaces exactly what the user wrote.

Numbers are found as chains of digit groups, and every run of whole groups inside a chain is a candidate on
its own: a card number followed by its expiry date or CVV, or preceded by an order number, is still found,
where one pattern would have swallowed the neighbour and failed the check. Each candidate must pass its
kind's check, the way a false alarm is cheapest to avoid: cards the Luhn check with a card issuer's prefix
and length, IBANs ISO 13616's mod-97 at their country's length, phone numbers an international prefix with
a plausible length, a trunk ``0``, or the North American 3-3-4 shape (dates, times, ISBNs and versions are
shaped otherwise). Names come from a list the user configures, also as ``Lovelace, Ada``, ``A. Lovelace``
and ``Ada-Lovelace``: no model guesses them. E-mail addresses spelled out (``ada at example dot org``,
``ada [at] example [dot] org``) are an option: on where personal data keeps a request local, since a false
alarm there only costs a local answer.

Pure functions, no I/O: the router calls them on every request.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

# Cards and phone numbers have eight digits close together, IBANs seven (CH51 5308 7GT3 DQNN CLRB A): one
# cheap scan spares the others on text without such numbers.
_SEVEN_DIGITS = re.compile(r"(?:\d\D{0,10}){7}")
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


# -- normalising, with the way back -----------------------------------------------------------------------------
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u200e\u200f")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_AT_ENTITY = re.compile(r"%40|&#0*64;|&#[xX]0*40;|&commat;", re.IGNORECASE)


def normalise(text: str) -> tuple[str, list[int] | None]:
    """``text`` as the patterns read it, and for each of its characters the index of the original one it came
    from (``None``: the text was already normal, indices are the same).

    First NFKC, with invisible characters dropped, then ``%40`` and its kin read as '@' (so ``%\u200b40`` and
    a full-width ``％４０`` are too). Only what needs it is touched: ASCII runs are copied, and a non-ASCII run
    that NFKC maps one character for one keeps its indices."""
    norm = text
    index: list[int] | None = None
    if _NON_ASCII.search(text) is not None:
        out: list[str] = []
        index = []
        pos = 0
        for m in _NON_ASCII.finditer(text):
            out.append(text[pos : m.start()])
            index.extend(range(pos, m.start()))
            run = m.group(0)
            kept: Sequence[int] = range(m.start(), m.end())
            if not _INVISIBLE.isdisjoint(run):
                kept = [i for i in kept if text[i] not in _INVISIBLE]
                run = "".join(text[i] for i in kept)
            nfkc = unicodedata.normalize("NFKC", run)
            if len(nfkc) == len(run):  # one character for one (full-width forms, spaces): the indices carry over
                out.append(nfkc)
                index.extend(kept)
            else:
                for i, ch in zip(kept, run):
                    one = unicodedata.normalize("NFKC", ch)
                    out.append(one)
                    index.extend([i] * len(one))
            pos = m.end()
        out.append(text[pos:])
        index.extend(range(pos, len(text)))
        norm = "".join(out)
    if ("%" in norm or "&" in norm) and _AT_ENTITY.search(norm):
        was = index if index is not None else range(len(norm))
        new_index: list[int]
        out, new_index, pos = [], [], 0
        for m in _AT_ENTITY.finditer(norm):
            out += [norm[pos : m.start()], "@"]
            new_index.extend(was[pos : m.start()])
            new_index.append(was[m.start()])
            pos = m.end()
        out.append(norm[pos:])
        new_index.extend(was[pos:])
        norm, index = "".join(out), new_index
    return norm, index


# -- e-mail addresses ---------------------------------------------------------------------------------------------
def _emails(text: str) -> list[tuple[int, int]]:
    """E-mail addresses, non-ASCII ones included, found by scanning out from each '@' within the RFC's length
    limits (a backtracking pattern took minutes on a crafted 600 KB message). One space may stand on each side
    of the '@' (``ada @ example.org``)."""
    out: list[tuple[int, int]] = []
    n = len(text)
    at = text.find("@")
    while at != -1:
        spaced = 0 < at and at + 1 < n and text[at - 1] == " " and text[at + 1] == " "
        left, right = (at - 1, at + 2) if spaced else (at, at + 1)
        start = left
        while start > 0 and left - start < _LOCAL_MAX and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_CHARS):
            start -= 1
        while start < left and text[start] in _LOCAL_CHARS:  # an address does not start with a dot or a dash
            start += 1
        end = right
        while end < n and end - right < _DOMAIN_MAX and (text[end].isalnum() or text[end] in ".-"):
            end += 1
        while end > right and text[end - 1] in ".-":
            end -= 1
        labels = text[right:end].split(".")
        if start < left and len(labels) >= 2 and all(labels) and _TLD.fullmatch(labels[-1]):
            out.append((start, end))
        at = text.find("@", max(end, at + 1))
    return out


_AT = re.compile(r"(?<![^\s\[({<])[aA][tT](?![^\s\])}>])")  # "at" as a word or in brackets: a literal, fast to find
_BRACKETS = {"[": "]", "(": ")", "{": "}", "<": ">"}
_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+|\s+DOT\s+|\.)"
_LABEL = r"[^\W_][\w-]{0,62}"
_DOMAIN_AFTER = re.compile(_LABEL + r"(?:" + _DOT + _LABEL + r")+(?!\w)", re.IGNORECASE)
_SPELLED_DOT = re.compile(_DOT, re.IGNORECASE)
_SPELLED_TLDS = frozenset(
    "com org net edu gov mil int info biz name pro io co ai app dev me tv xyz online site tech email uk de fr nl es it ch be "
    "at se no dk fi pl cz ru jp cn in au ca us eu ie pt br mx ar nz za kr tw hk sg gr hu ro bg sk si hr rs ua tr il ae".split()
)
# Words that make "<word> at <word> dot com" ordinary English ("we met at the dot com boom").
_NOT_A_DOMAIN = frozenset("the a an this that these those my your our their his her its one some any".split())


def _spelled_emails(text: str) -> list[tuple[int, int]]:
    """``ada at example dot org``, ``ada [at] example [dot] org``, ``ada(at)example.org``, ``ada AT example.org``.

    A lowercase `` at `` with a literal dot is English (``visit us at example.com``), so it counts only when a
    dot is spelled out too; the domain must end in a common top-level domain and not start with an article.
    Found from each ``at``, so the cost is in the few of them, not in every word."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for at in _finditer(_AT, text):
        left, right = at.start(), at.end()
        if left == 0 or right >= n:
            continue
        opening = text[left - 1]
        if opening in _BRACKETS:
            if text[right] != _BRACKETS[opening]:
                continue
            left, right = left - 1, right + 1
        elif not text[right].isspace():
            continue
        bracketed = opening in _BRACKETS
        while left > 0 and text[left - 1].isspace() and at.start() - left < 8:
            left -= 1
        while right < n and text[right].isspace() and right - at.end() < 8:
            right += 1
        if not bracketed and (left == at.start() or right == at.end()):
            continue
        start = left
        while start > 0 and left - start < _LOCAL_MAX and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_CHARS):
            start -= 1
        while start < left and not text[start].isalnum():  # starts with a letter or digit
            start += 1
        if start == left:
            continue
        domain = _DOMAIN_AFTER.match(text, right)
        if domain is None:
            continue
        labels = _SPELLED_DOT.split(domain.group(0))
        spelled_dot = len(labels) - 1 > domain.group(0).count(".")
        if not bracketed and at.group(0) != "AT" and not spelled_dot:
            continue
        if labels[-1].lower() not in _SPELLED_TLDS or labels[0].lower() in _NOT_A_DOMAIN:
            continue
        out.append((start, domain.end()))
    return out


# -- numbers ------------------------------------------------------------------------------------------------------
def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes (IIN ranges) and the lengths each network issues: a Luhn-valid number outside them is an
# order number or a barcode (an EAN-13 passes Luhn one time in ten), not a card.
_CARD_RANGES: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({16, 19})),  # Visa (13 digits is retired)
    (51, 55, frozenset({16})), (2221, 2720, frozenset({16})),  # Mastercard
    (34, 34, frozenset({15})), (37, 37, frozenset({15})),  # American Express
    (300, 305, frozenset({14, 16, 17, 18, 19})), (36, 36, frozenset(range(14, 20))), (38, 39, frozenset({16, 17, 18, 19})),  # Diners
    (3528, 3589, frozenset(range(16, 20))),  # JCB
    (6011, 6011, frozenset(range(16, 20))), (644, 649, frozenset(range(16, 20))), (65, 65, frozenset(range(16, 20))),  # Discover
    (62, 62, frozenset(range(16, 20))),  # UnionPay
    (50, 50, frozenset(range(16, 20))), (56, 64, frozenset(range(16, 20))), (66, 69, frozenset(range(16, 20))),  # Maestro
    (2200, 2204, frozenset(range(16, 20))),  # Mir
    (60, 60, frozenset({16})), (81, 82, frozenset({16})), (508, 508, frozenset({16})),  # RuPay
)


def _lengths_by_prefix() -> dict[str, frozenset[int]]:
    """The card lengths issued under each four-digit prefix: one look-up instead of a walk through the ranges."""
    out: dict[str, frozenset[int]] = {}
    for p in range(10_000):
        prefix = f"{p:04d}"
        for lo, hi, lengths in _CARD_RANGES:
            if lo <= int(prefix[: len(str(lo))]) <= hi:
                out[prefix] = lengths
                break
    return out


_CARD_LENGTHS = _lengths_by_prefix()


def _is_card(digits: str) -> bool:
    return len(digits) in _CARD_LENGTHS.get(digits[:4], ()) and _luhn(digits)


_CARD_CHAIN = re.compile(r"(?<![\d.,])(?=[\d \t./_\n-]{14})\d+(?:(?:[ \t]{0,2}[-./_][ \t]{0,2}|[ \t]{1,2}|[ \t]?\r?\n[ \t]?)\d+)*")
_GROUP = re.compile(r"\d+")


def _cards(text: str) -> list[tuple[int, int]]:
    """Card numbers: every run of whole digit groups in a chain that is a card, at 16 digits where a start has
    more than one (a card followed by a CVV can be a valid 19-digit one). Where two overlap ("4444 4111 1111
    1111 1111": either four groups may be the card), their union is taken: it holds the card either way."""
    out: list[tuple[int, int]] = []
    for chain in _finditer(_CARD_CHAIN, text):
        if chain.end() - chain.start() < 14 or len(_NOT_DIGIT.sub("", chain.group(0))) < 14:
            continue
        groups = [(g.start() + chain.start(), g.end() + chain.start()) for g in _GROUP.finditer(chain.group(0))]
        last = -1  # the last group of the previous card in this chain
        for i in range(len(groups)):
            valid: list[tuple[int, int]] = []
            digits = ""
            for j in range(i, len(groups)):
                if groups[j][1] - groups[j][0] < 3:
                    break  # cards are written in groups of three digits or more: "23 05/29 ..." is a date
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 14 and _is_card(digits):
                    valid.append((len(digits), j))
            if not valid:
                continue
            j = next((j for n, j in valid if n == 16), valid[-1][1])
            if i <= last:
                out[-1] = (out[-1][0], groups[max(j, last)][1])
            else:
                out.append((groups[i][0], groups[j][1]))
            last = max(j, last)
    return out


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
_IBAN_SEP = r"[ \t.\-]{0,2}\n?[ \t]?"
# Every place an IBAN could start (a lookahead, so candidates overlap: "Ref AB12 DE89 ..." tries AB12, then DE89).
_IBAN = re.compile(r"(?<![A-Za-z0-9])(?=([A-Za-z]{2}" + _IBAN_SEP + r"\d{2}(?:" + _IBAN_SEP + r"[A-Za-z0-9]){11,30}))")


_NOT_ALNUM = re.compile(r"[\W_]+")


def _mod97(s: str) -> bool:
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban_span(start: int, candidate: str) -> tuple[int, int] | None:
    """The prefix of a candidate that is a valid IBAN at its country's length (any case, any grouping)."""
    n = IBAN_LENGTHS.get(candidate[:2].upper())
    if n is None:
        return None
    chars = _NOT_ALNUM.sub("", candidate).upper()
    if len(chars) < n or not chars[2:4].isdigit() or not _mod97(chars[:n]):
        return None
    seen, end = 0, 0  # where the n-th letter or digit ends, and whether one follows at once
    for i, ch in enumerate(candidate):
        if ch.isalnum():
            seen += 1
            if seen == n:
                end = i + 1
                break
    if end < len(candidate) and candidate[end].isalnum():
        return None  # the letters and digits run on without a break: a longer token, not an IBAN
    return start, start + end


def _ibans(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for m in _finditer(_IBAN, text):
        if out and m.start() < out[-1][1]:
            continue
        span = _iban_span(m.start(), m.group(1))
        if span is not None:
            out.append(span)
    return out


# Country calling codes and how many digits follow them in numbers of that country (ITU E.164; one range for
# all others). "+1 415 555 2671 12345" is a US number and a ZIP code, because +1 numbers have ten digits.
_NATIONAL_DIGITS = {
    "1": (10, 10), "7": (10, 10), "20": (8, 10), "27": (9, 9), "30": (10, 10), "31": (9, 9), "32": (8, 9), "33": (9, 9),
    "34": (9, 9), "36": (8, 9), "39": (6, 11), "40": (9, 9), "41": (9, 9), "43": (4, 13), "44": (9, 10), "45": (8, 8),
    "46": (7, 10), "47": (8, 8), "48": (9, 9), "49": (6, 13), "52": (10, 10), "55": (10, 11), "61": (9, 9), "64": (8, 10),
    "81": (9, 10), "82": (8, 10), "86": (10, 11), "90": (10, 10), "91": (10, 10), "351": (9, 9), "352": (4, 11), "353": (7, 9),
    "358": (5, 12), "380": (9, 9), "420": (9, 9), "971": (8, 9), "972": (8, 9),
}
_OTHER_NATIONAL = (6, 12)
_PHONE_CHAIN = re.compile(r"(?<![\w+])(?=[\d \t()+./-]{9})(?:\+[ \t]?)?\(?\d+\)?(?:(?:[ \t]{0,2}[-./][ \t]{0,2}|[ \t]{1,2}|(?<=\)))\(?\d+\)?)*")
_PHONE_GROUP = re.compile(r"(\+[ \t]?)?(\()?(\d+)(\))?")
_NOT_DIGIT = re.compile(r"\D")
_INTERNATIONAL_HINT = re.compile(r"\+|(?<!\d)00")
_NATIONAL_HINT = re.compile(r"\(|(?:^|\s)0\d|(?<!\d)\d{3}\D{1,3}\d{3}\D{1,3}\d{4}(?!\d)|(?<!\d)\d{10,11}(?!\d)")
_PHONE_CUE = re.compile(r"\b(?:phone|tel|telephone|call|mobile|cell|fax|whatsapp|ring|sms|text me|reach me|ph|(?:my|our|his|her|their|your)\s+(?:number|no))\b\W{0,3}(?:\w+\W{1,3}){0,2}$", re.I)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _international(digits: str) -> bool:
    for k in (1, 2, 3):
        lo, hi = _NATIONAL_DIGITS.get(digits[:k], (0, -1))
        if lo:
            return lo <= len(digits) - k <= hi
    lo, hi = _OTHER_NATIONAL
    return digits[0] != "0" and lo <= len(digits) - 3 <= hi


def _nanp(groups: list[str]) -> bool:
    """The North American shape: [1] 3-3-4, area code and exchange not starting with 0 or 1."""
    if len(groups) == 4 and groups[0] == "1":
        groups = groups[1:]
    return [len(g) for g in groups] == [3, 3, 4] and groups[0][0] not in "01" and groups[1][0] not in "01"


def _phone_end(groups: list[tuple[int, int, str, bool, bool, bool]], i: int, text: str) -> int | None:
    """The last group of the longest phone number that starts at group ``i``, if one does.

    ``groups``: (start, end, digits, '+' before, '(' before, ')' after) of each group of a chain. Inside a
    chain (after "room 4", say) a national number after its trunk 0 must not be grouped in threes: "17 086
    276 134" is a price."""
    _, _, first, plus, paren, closed = groups[i]
    if i > 0 and not plus and not paren and first.startswith("0") and len(groups[i - 1][2]) > 3:
        return None  # "DE00 4046 0676 0706 9911 84": the middle of a longer number
    inside = i > 0 and not plus and not paren and first.startswith("0")
    if not plus and paren and closed and len(first) == 3:  # (415) 555-2671
        ends = [i + 2]
        shape = _nanp
    elif not plus and not first.startswith("0"):  # [1] 415 555 2671
        ends = [i + 3, i + 2]
        shape = _nanp
    else:
        ends = list(range(min(len(groups), i + 9) - 1, i - 1, -1))
        shape = None
    for j in ends:
        if j >= len(groups):
            continue
        span = groups[i : j + 1]
        end = groups[j][1]
        if end + 1 < len(text) and text[end] == ":" and text[end + 1].isdigit():
            continue  # the hour of a time (10:22)
        digits = "".join(g[2] for g in span)
        if shape is not None:
            ok = shape([g[2] for g in span])
        elif plus:  # +CC ...: "(0)" after the country code is the trunk prefix, written but never dialled
            kept = [g[2] for k, g in enumerate(span) if not (k == 1 and g[2] == "0" and g[4] and g[5])]
            ok = 8 <= sum(map(len, kept)) <= 17 and _international("".join(kept))
        elif digits.startswith("00"):  # 0044 20 7946 0958; one run of digits from 00 is a barcode or a code
            ok = len(span) > 1 and 10 <= len(digits) <= 17 and _international(digits[2:])
        else:  # a national number after its trunk prefix: 020 7946 0958, 06 12 34 56 78
            ok = 9 <= len(digits) <= 11 and 2 <= len(first) <= 5 and all(len(g[2]) > 1 for g in span)
            ok = ok and not (inside and all(len(g[2]) == 3 for g in span)) and not any(g[4] or g[5] for g in span[1:-1])
            ok = ok and (len(span) == 1 or not (span[0][5] or span[-1][4]))  # a bracket only around the whole
        if ok and not _DATE.search(text, groups[i][0], end):
            return j
    if not plus and not paren and _PHONE_CUE.search(text, max(0, groups[i][0] - 24), groups[i][0]):
        # One run of digits is a phone number only where the text says so ("call me on 07700900123"): without
        # the cue it is as often an order number.
        if (len(first) == 10 and first[0] not in "01" and first[3] not in "01") or (first[0] == "0" != first[1] and 10 <= len(first) <= 11):
            return i
    return None


def _phones(text: str, international: bool) -> list[tuple[int, int]]:
    """Phone numbers: runs of whole groups in a chain of digit groups, the longest valid one from each start;
    where two overlap ("01/24 (200) 200-0000"), their union. ``international``: only numbers written with
    their country code (``+44``, ``0044``), which are looked for before card numbers, or only the others."""
    out: list[tuple[int, int]] = []
    hint = _INTERNATIONAL_HINT if international else _NATIONAL_HINT
    for chain in _finditer(_PHONE_CHAIN, text):
        if hint.search(chain.group(0)) is None or len(_NOT_DIGIT.sub("", chain.group(0))) < 8:
            continue  # no start a number of this kind could have
        base = chain.start()
        groups = [(base + g.start(), base + g.end(), g.group(3), bool(g.group(1)), bool(g.group(2)), bool(g.group(4)))
                  for g in _PHONE_GROUP.finditer(chain.group(0))]
        i = 0
        while i < len(groups):
            if i > 0 and not text[groups[i][0] - 1].isspace():
                i += 1  # a number starts after a space, not inside 10.0.19045 or 2024-05-12
                continue
            intl = groups[i][3] or (groups[i][2].startswith("00") and i + 1 < len(groups))
            j = _phone_end(groups, i, text) if intl == international else None
            if j is not None:  # numbers that overlap are taken as one: it holds the real one either way
                if out and out[-1][1] > groups[i][0]:
                    out[-1] = (out[-1][0], max(out[-1][1], groups[j][1]))
                else:
                    out.append((groups[i][0], groups[j][1]))
            i += 1
    return out


# -- names --------------------------------------------------------------------------------------------------------
def _names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """Each configured name as written, and as ``Last, First``, ``F. Last`` and ``First-Last``."""
    clean = sorted({" ".join(n.split()) for n in names if n.strip()}, key=len, reverse=True)
    if not clean:
        return None
    alternatives: list[str] = []
    for n in clean:
        parts = [re.escape(p) for p in n.split(" ")]
        # Any run of white space (a newline, a non-breaking space) or a hyphen may stand between the words.
        alternatives.append(r"(?:\s{1,4}|\s?-\s?)".join(parts))
        if len(parts) > 1:
            first, last = parts[0], parts[-1]
            alternatives.append(last + r"\s{0,2},\s{0,4}" + first)
            alternatives.append(re.escape(n[0]) + r"\.\s{0,2}" + last)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, pos = [], 0
    for start, end in spans:
        pieces += [text[pos:start], "\x00" * (end - start)]
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


class PersonalDataDetector:
    """Finds e-mail addresses, IBANs, card numbers, phone numbers and configured names; spans never overlap.

    ``spelled``: also e-mail addresses written out (``ada at example dot org``); the gateway turns it on where
    personal data keeps a request on the device.
    """

    def __init__(self, names: Sequence[str] = (), spelled: bool = False) -> None:
        self._names = _names_pattern(names)
        # Every form of a name holds its last word: text without any of them skips the names pattern.
        self._surnames = tuple({n.split()[-1].lower() for n in names if n.strip()})
        self.spelled = spelled

    def find(self, text: str) -> list[Finding]:
        norm, index = normalise(text)
        found: list[tuple[str, int, int]] = []
        taken: list[tuple[int, int]] = []

        def add(kind: str, start: int, end: int) -> None:
            # ``taken`` holds non-overlapping spans in order, so one look at each neighbour decides (a text with
            # a hundred thousand findings must not cost a hundred thousand squared).
            i = bisect.bisect_left(taken, (start, end))
            if (i > 0 and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
                return
            taken.insert(i, (start, end))
            found.append((kind, start, end))

        if "@" in norm:
            for start, end in _emails(norm):
                add("email", start, end)
        if self.spelled:
            for start, end in _spelled_emails(norm):
                add("email", start, end)
        if _search(_SEVEN_DIGITS, norm):
            # Each kind's numbers are blanked out before the next kind looks: they cannot be the next kind
            # too, and in text dense with numbers the later scans then have far fewer chains to try.
            # A number with its country code ("+1 391 200 0001 01/24") is surer than the card its digits
            # might also make, a card surer than a national phone number.
            scans: tuple[tuple[str, Callable[[str], list[tuple[int, int]]]], ...] = (
                ("iban", _ibans), ("phone", lambda t: _phones(t, True)), ("card", _cards), ("phone", lambda t: _phones(t, False)))
            for n, (kind, scan) in enumerate(scans):
                spans = scan(norm)
                for start, end in spans:
                    add(kind, start, end)
                if spans and n < len(scans) - 1:
                    norm = _blank(norm, spans)
        lowered = norm.lower() if self._names is not None else ""
        if self._names is not None and any(surname in lowered for surname in self._surnames):
            for m in _finditer(self._names, norm):
                add("name", m.start(), m.end())
        out = []
        for kind, start, end in sorted(found, key=lambda f: f[1]):
            if index is not None:
                start, end = index[start], index[end - 1] + 1
            out.append(Finding(kind, start, end, text[start:end]))
        return out

    def kinds(self, texts: Iterable[str]) -> tuple[str, ...]:
        """The kinds of personal data present in any of ``texts``, in a fixed order."""
        seen = {f.kind for t in texts for f in self.find(t)}
        return tuple(k for k in KINDS if k in seen)
