"""Labels on the device: ratings and cascade outcomes become labelled query vectors in the real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from hybridgate import Client, HybridgateError
from tests.conftest import ServerThread, drain, post_chat

Q = [{"role": "user", "content": "What is the capital of Australia?"}]


def _labels(srv: ServerThread, limit: int = 100) -> list[dict]:
    """Newest first: straight from Redis when the gateway uses it, else from its in-process store."""
    gw = srv.gateway  # type: ignore[attr-defined]
    if gw.state.kind == "redis":
        r = redis.Redis.from_url(gw.cfg.state.redis_url)
        return [json.loads(x) for x in r.lrange("hybridgate:labels", 0, limit - 1)]
    return asyncio.run(gw.state.labels(limit))  # the in-process store is not bound to the server's loop


def test_rating_a_local_answer_stores_a_label_in_redis_and_no_text(
    make_gateway: Callable[..., ServerThread], stub, redis_url: str
) -> None:
    key = f"k-{uuid.uuid4().hex[:12]}"
    srv = make_gateway(server={"api_keys": [key]}, state={"redis_url": redis_url}, router={"threshold": 1.0})
    auth = {"Authorization": f"Bearer {key}"}
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 3}, headers=auth)
    assert r.headers["x-hybridgate-route"] == "local"
    rid = r.json()["id"]
    with Client(srv.url, api_key=key) as c:
        out = c.feedback(rid, "bad")
        assert out == {"object": "hybridgate.feedback", "id": rid, "rating": 0.0, "label": 1, "stored": True}
        with pytest.raises(HybridgateError) as again:  # one rating per answer
            c.feedback(rid, "good")
        assert again.value.status == 404
    newest = _labels(srv, 1)[0]
    assert newest["label"] == 1 and newest["source"] == "feedback" and len(newest["vector"]) == 384
    assert "Australia" not in str(newest)
    raw = httpx.post(f"{srv.url}/v1/feedback", json={"id": rid, "rating": 7}, headers=auth)
    assert raw.status_code == 422


def test_feedback_from_another_key_or_for_a_cloud_success_is_not_a_label(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(server={"api_keys": ["a", "b"]}, router={"threshold": 0.0})
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 3}, headers={"Authorization": "Bearer a"})
    rid = r.json()["id"]
    other = httpx.post(f"{srv.url}/v1/feedback", json={"id": rid, "rating": "bad"}, headers={"Authorization": "Bearer b"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "answer_not_found"
    # Key b's attempt did not spend key a's one rating of its own answer.
    mine = httpx.post(f"{srv.url}/v1/feedback", json={"id": rid, "rating": "bad"}, headers={"Authorization": "Bearer a"})
    assert mine.status_code == 200 and mine.json()["id"] == rid
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 3}, headers={"Authorization": "Bearer a"})
    good = httpx.post(f"{srv.url}/v1/feedback", json={"id": r.json()["id"], "rating": "good"}, headers={"Authorization": "Bearer a"})
    assert good.json()["label"] is None and good.json()["stored"] is False


def test_a_cascade_labels_itself(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 1.0, "t_local": 0.0, "mode": "cascade"}, collaboration={"cascade_min_confidence": 1.0})
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 6})
    assert r.json()["hybridgate"]["collaboration"]["escalated"] is True
    assert _labels(srv, 1)[0]["source"] == "cascade" and _labels(srv, 1)[0]["label"] == 1


def test_shadow_comparison_asks_the_cloud_and_its_verdict_becomes_a_label(make_gateway: Callable[..., ServerThread], stub) -> None:
    _, cloud = stub
    cloud.reply = "B"  # the stand-in answers "B" to everything: its own answer, then its verdict
    srv = make_gateway(router={"threshold": 1.0}, state={"shadow_rate": 1.0}, privacy={"names": ["Ada Lovelace"]})
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 4})
    assert r.headers["x-hybridgate-route"] == "local"
    local_answer = r.json()["choices"][0]["message"]["content"]
    drain(srv.gateway)  # the shadow comparison: the cloud's own answer, then its verdict, then the label
    assert len(cloud.received) == 2
    judge = cloud.received[1]["messages"][0]["content"]
    assert "Answer A:\n" + local_answer in judge and "Answer B:\nB" in judge
    assert _labels(srv, 1)[0]["source"] == "shadow" and _labels(srv, 1)[0]["label"] == 1
    private = [{"role": "user", "content": "Ada Lovelace asks: what is the capital of Australia?"}]
    assert post_chat(srv.url, {"model": "hybridgate/auto", "messages": private, "max_tokens": 2}).headers["x-hybridgate-route"] == "local"
    drain(srv.gateway)  # a shadow comparison it started would have sent by now
    assert len(cloud.received) == 2  # personal data is never inspected in the cloud
