"""The dashboard's history sampler, who may see /ui and its JSON, and that no conversation text reaches either."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgate.serving.metrics import Metrics
from hybridgate.serving.ui.history import DAY, HOUR, HistorySampler, MemoryRing, add_into, quantile_from_buckets
from tests.conftest import ServerThread, post_chat

ADMIN, TENANT = "admin-key-for-the-dashboard", "tenant-key-for-the-dashboard"
CANARY = "zebra-canary-8812 my bank PIN"

# -- the sampler ------------------------------------------------------------------------------------------------


async def _window_total(sampler: HistorySampler, now: float, field: str) -> float:
    total: dict[str, float] = {}
    for _, c in await sampler.buckets(HOUR, now):
        add_into(total, c)
    return sum(v for k, v in total.items() if k.startswith(field))


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["local", "cloud", "collab"]), st.integers(0, 5), st.booleans(), st.floats(0, 30)), max_size=30))
async def test_every_counted_request_is_in_the_history_once(steps: list[tuple[str, int, bool, float]]) -> None:
    """Whatever the interleaving of requests and samples (and however far apart in time, within the hour), the
    history holds exactly what the counters counted: nothing lost between samples, nothing counted twice."""
    m = Metrics()
    sampler = HistorySampler(m, sample_s=3600)
    now, counted = 1_000_000.0, 0
    for route, n, sample, dt in steps:
        now += dt
        m.requests.labels(route, route, "ok").inc(n)
        counted += n
        if sample:
            await sampler.sample(now)
        assert await _window_total(sampler, now, "req|") == counted


async def test_rings_stay_bounded_and_forget_what_left_the_window() -> None:
    ring = MemoryRing()
    for i in range(HOUR.slots * 3):
        await ring.add(HOUR, HOUR.start_of(i * HOUR.bucket_s), {"req|local|local|ok": 1})
    kept = await ring.read(HOUR, 0, 10**9)
    assert len(kept) == HOUR.slots
    for i in range(DAY.slots + 5):
        await ring.add(DAY, DAY.start_of(i * DAY.bucket_s * 7), {"x": 1})  # sparse: old buckets expire by age too
    assert all(t > (DAY.slots + 4) * DAY.bucket_s * 7 - DAY.span_s for t, _ in await ring.read(DAY, 0, 10**9))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 50), min_size=1, max_size=200), st.sampled_from([0.5, 0.95]))
def test_quantile_lies_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")]
    cumulative = {b: float(sum(v <= b for v in values)) for b in bounds}
    est = quantile_from_buckets(cumulative, q)
    true = float(np.quantile(values, q, method="inverted_cdf"))
    upper = next(b for b in bounds if true <= b)
    lower = max([0.0, *[b for b in bounds if b < upper]])
    assert est is not None and lower - 1e-9 <= est <= (upper if upper != float("inf") else 60)


# -- access -----------------------------------------------------------------------------------------------------

API = ["/ui/api/overview", "/ui/api/decisions", "/ui/api/router", "/ui/api/nodes", "/ui/api/overview?window=day", "/ui/api/feedback?id=x"]
PAGES = ["/ui", "/ui/decisions", "/ui/router", "/ui/nodes"]


@pytest.fixture
def keyed(make_gateway: Callable[..., ServerThread]) -> ServerThread:
    return make_gateway(server={"api_keys": [TENANT], "admin_keys": [ADMIN]})


def test_no_key_or_a_tenant_key_gets_no_page_and_no_data(keyed: ServerThread) -> None:
    for headers in ({}, {"authorization": f"Bearer {TENANT}"}, {"authorization": "Bearer wrong"}):
        for path in API:
            r = httpx.get(keyed.url + path, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "admin_only", (path, headers)
        for path in PAGES:
            r = httpx.get(keyed.url + path, headers=headers, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    # a tenant's key does not sign in either
    r = httpx.post(keyed.url + "/ui/login", data={"key": TENANT}, follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_an_admin_key_signs_in_with_a_strict_httponly_cookie(keyed: ServerThread) -> None:
    with httpx.Client(base_url=keyed.url) as c:
        r = c.post("/ui/login", data={"key": ADMIN}, follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and ADMIN.lower() not in cookie
        for path in API + PAGES:
            assert c.get(path).status_code == 200, path
        c.post("/ui/logout")
        assert c.get("/ui/api/overview").status_code == 401
    for path in API + PAGES:
        assert httpx.get(keyed.url + path, headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_without_admin_keys_only_this_device_sees_it(make_gateway: Callable[..., ServerThread]) -> None:
    srv = make_gateway(server={"api_keys": [TENANT]})
    assert httpx.get(srv.url + "/ui/api/overview").status_code == 200
    for h in ({"x-forwarded-for": "203.0.113.9"}, {"forwarded": "for=203.0.113.9"}, {"x-real-ip": "203.0.113.9"}):
        assert httpx.get(srv.url + "/ui/api/overview", headers=h).status_code == 403
        assert httpx.get(srv.url + "/ui", headers=h).status_code == 403
    # nobody signs in where there is no admin key to sign in with
    assert httpx.post(srv.url + "/ui/login", data={"key": TENANT}, follow_redirects=False).status_code == 401


def test_pages_carry_a_strict_csp_and_no_inline_script(keyed: ServerThread) -> None:
    h = {"authorization": f"Bearer {ADMIN}"}
    for path in [*PAGES, "/ui/login"]:
        r = httpx.get(keyed.url + path, headers=h)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path  # every script is a file
        assert r.headers["x-content-type-options"] == "nosniff"
    js = httpx.get(keyed.url + "/ui/static/app.js").text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_the_json_the_pages_read_is_in_the_openapi_schema(keyed: ServerThread) -> None:
    paths = httpx.get(keyed.url + "/openapi.json", headers={"authorization": f"Bearer {ADMIN}"}).json()["paths"]
    for p in ("/ui/api/overview", "/ui/api/decisions", "/ui/api/decisions/{request_id}", "/ui/api/router", "/ui/api/nodes", "/ui/api/feedback"):
        assert p in paths and "401" in paths[p]["get"]["responses"], p


@pytest.mark.slow
def test_no_prompt_or_answer_text_in_any_dashboard_json(keyed: ServerThread) -> None:
    h = {"authorization": f"Bearer {ADMIN}"}
    r = post_chat(keyed.url, {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": CANARY}]}, headers=h)
    assert r.status_code == 200
    answer = r.json()["choices"][0]["message"]["content"]
    rid = r.json()["id"]
    bodies = [httpx.get(keyed.url + p, headers=h).text for p in [*API, f"/ui/api/decisions/{rid}"]]
    assert rid in bodies[1] and rid in bodies[-1]
    for body in bodies:
        assert "zebra-canary" not in body and answer not in body
    assert httpx.get(keyed.url + "/ui/api/decisions/chatcmpl-none", headers=h).status_code == 404


@pytest.mark.slow
def test_top_once_prints_the_overview_and_newest_decisions(keyed: ServerThread) -> None:
    from typer.testing import CliRunner

    from hybridgate.cli import app

    h = {"authorization": f"Bearer {TENANT}"}
    assert post_chat(keyed.url, {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}]}, headers=h).status_code == 200
    run = CliRunner().invoke(app, ["top", "--url", keyed.url, "--key", ADMIN, "--once"], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "answered" in run.output and "newest decisions" in run.output and "cloud" in run.output
    # the decision's row: its tenant pseudonym
    from hybridgate.serving.state.base import key_id

    assert key_id(TENANT) in run.output
    denied = CliRunner().invoke(app, ["top", "--url", keyed.url, "--key", TENANT, "--once"])
    assert denied.exit_code == 2 and "HTTP 401" in denied.output and "Traceback" not in denied.output


async def test_with_redis_the_history_outlives_the_process_and_adds_up_replicas(redis_url: str) -> None:
    """Two gateways (replicas, or one restarted) sharing a Redis write into the same buckets."""
    now = 2_000_000.0
    a, b = Metrics(), Metrics()
    first, second = HistorySampler(a, redis_url), HistorySampler(b, redis_url)
    a.requests.labels("local", "local", "ok").inc(3)
    b.requests.labels("cloud", "cloud", "ok").inc(2)
    await first.sample(now)
    await second.sample(now + 1)
    await first.aclose()
    await second.aclose()
    later = HistorySampler(Metrics(), redis_url)  # a fresh process: nothing in its memory
    total: dict[str, float] = {}
    for _, c in await later.buckets(HOUR, now + 2):
        add_into(total, c)
    assert total == {"req|local|local|ok": 3, "req|cloud|cloud|ok": 2}
    await later.aclose()


async def test_collaborative_answers_are_counted_by_mode_once_from_the_decision_log() -> None:
    from hybridgate.serving.state.memory import MemoryStore

    store = MemoryStore()
    await store.log_decision({"id": "before", "ts": 1.0, "route": "collab", "status": "ok", "decided": {"mode": "cascade"}})
    sampler = HistorySampler(Metrics(), decisions=store.recent_decisions)  # what an earlier process logged is not recounted
    t0 = time.time()
    for i, mode in enumerate(["cascade"] * 40 + ["condense"] * 3):  # more than one read of the tail
        await store.log_decision({"id": f"d{i}", "ts": t0 + 1 + (i // 5) * 0.001, "route": "collab", "status": "ok", "decided": {"mode": mode}})
    await store.log_decision({"id": "local", "ts": t0 + 2, "route": "local", "status": "ok", "decided": {}})
    now = t0 + 3
    await sampler.sample(now)
    await sampler.sample(now)
    await store.log_decision({"id": "late", "ts": t0 + 2, "route": "collab", "status": "ok", "decided": {"mode": "redact"}})  # same ts
    await sampler.sample(now)
    total: dict[str, float] = {}
    for _, c in await sampler.buckets(HOUR, now):
        add_into(total, c)
    assert {k: v for k, v in total.items() if k.startswith("mode|")} == {"mode|cascade": 40, "mode|condense": 3, "mode|redact": 1}


# -- feedback on the decision rows --------------------------------------------------------------------------------


def _ask(url: str, key: str) -> str:
    # routed (threshold 0: to the cloud), so the answer is held for a rating; a pinned model is not scored
    r = post_chat(url, {"model": "hybridgate/auto", "messages": [{"role": "user", "content": "hi"}]}, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    return str(r.json()["id"])


def _rate(url: str, rid: str, rating: str | float, key: str) -> int:
    return httpx.post(f"{url}/v1/feedback", json={"id": rid, "rating": rating}, headers={"authorization": f"Bearer {key}"}).status_code


def _feedback_column(url: str) -> dict[str, float | None]:
    rows = httpx.get(url + "/ui/api/decisions?limit=50", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    return {r["id"]: r["feedback"] for r in rows}


def test_a_decision_row_shows_its_own_rating_and_no_one_elses(make_gateway: Callable[..., ServerThread]) -> None:
    """Only the key that asked rates an answer, once; the row shows that rating and nothing before it."""
    srv = make_gateway(server={"api_keys": ["a", "b"], "admin_keys": [ADMIN]}, router={"threshold": 0.0})
    rated, unrated, bs = _ask(srv.url, "a"), _ask(srv.url, "a"), _ask(srv.url, "b")
    assert _rate(srv.url, rated, "bad", "b") == 404  # another key's rating is refused ...
    assert _rate(srv.url, bs, 0.75, "a") == 404
    assert _feedback_column(srv.url) == {rated: None, unrated: None, bs: None}  # ... and never shows
    assert _rate(srv.url, rated, 0.25, "a") == 200
    assert _rate(srv.url, rated, 1.0, "a") == 404  # one rating per answer: the first one stays
    assert _feedback_column(srv.url) == {rated: 0.25, unrated: None, bs: None}
    h = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.get(f"{srv.url}/ui/api/decisions/{rated}", headers=h).json()["feedback"] == 0.25
    assert httpx.get(f"{srv.url}/ui/api/decisions/{unrated}", headers=h).json()["feedback"] is None
    # what the live table asks for the rows it already shows
    got = httpx.get(f"{srv.url}/ui/api/feedback", params=[("id", rated), ("id", unrated), ("id", "<script>")], headers=h).json()
    assert got["data"] == {rated: 0.25, unrated: None, "<script>": None}
    too_many = httpx.get(f"{srv.url}/ui/api/feedback", params=[("id", str(i)) for i in range(201)], headers=h)
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "invalid_schema"
    assert httpx.get(f"{srv.url}/ui/api/feedback", params={"id": rated}, headers={"authorization": "Bearer a"}).status_code == 401


def test_with_redis_a_rating_given_through_one_gateway_shows_in_another(make_gateway: Callable[..., ServerThread], redis_url: str) -> None:
    sections = {"server": {"api_keys": ["a"], "admin_keys": [ADMIN]}, "state": {"redis_url": redis_url}, "router": {"threshold": 0.0}}
    first, second = make_gateway(**sections), make_gateway(**sections)
    rid, other = _ask(first.url, "a"), _ask(first.url, "a")
    assert _rate(second.url, rid, "good", "a") == 200
    assert _feedback_column(first.url) == {rid: 1.0, other: None}
    assert _feedback_column(second.url) == {rid: 1.0, other: None}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 12), st.sampled_from([0.0, 0.5, 1.0])), max_size=40))
async def test_ratings_are_kept_for_the_newest_answers_rated_in_memory_and_redis(redis_url: str, steps: list[tuple[int, float]]) -> None:
    """Both stores keep the ratings of the newest ``decision_log_size`` answers rated (bounded like the log),
    each answer's first rating, and read any set of ids in one call."""
    import redis.asyncio as aioredis

    from hybridgate.serving.state.memory import MemoryStore
    from hybridgate.serving.state.redis_store import RedisStore

    size = 5
    async with aioredis.Redis.from_url(redis_url) as r:
        await r.delete("hybridgate:ratings", "hybridgate:rated")
    stores = [MemoryStore(decision_log_size=size), RedisStore(redis_url, decision_log_size=size)]
    expected: dict[str, float] = {}
    for n, rating in steps:
        rid = f"chatcmpl-{n}"
        if rid in expected:
            continue  # take_held lets one rating per answer through
        expected[rid] = rating
        while len(expected) > size:
            del expected[next(iter(expected))]
        for store in stores:
            await store.rate(rid, rating)
    ids = [f"chatcmpl-{n}" for n in range(13)]
    for store in stores:
        assert await store.ratings(ids) == expected, store.kind
        assert await store.ratings([]) == {}
        await store.aclose()
