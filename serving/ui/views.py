"""What each dashboard page shows, as JSON: built from the sampled history, the decision log and what the
gateway already describes. Never any prompt or answer text: decision records carry none, and rows are built
field by field from a fixed list, so a field added to the log later does not reach the page unseen."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from hybridgate.serving.backends.base import Usage
from hybridgate.serving.backends.pricing import cost_usd
from hybridgate.serving.energy import cloud_energy
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.ui.history import RESOLUTIONS, Counts, HistorySampler, add_into, quantile_from_buckets

ROUTES = ("local", "cloud", "collab")


def _r(v: float, nd: int = 6) -> float:
    return round(float(v), nd)


def _latency(totals: Counts, prefix: str) -> dict[str, dict[float, float]]:
    """Cumulative histogram buckets per route, from ``lat|route|le`` fields."""
    out: dict[str, dict[float, float]] = {}
    for k, v in totals.items():
        parts = k.split("|")
        if parts[0] == prefix and len(parts) == 3:
            le = math.inf if parts[2] in ("+Inf", "inf") else float(parts[2])
            out.setdefault(parts[1], {})[le] = out.get(parts[1], {}).get(le, 0.0) + v
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def overview(gateway: Gateway, sampler: HistorySampler, window: str) -> dict[str, Any]:
    res = RESOLUTIONS[window]
    now = time.time()
    rows = await sampler.buckets(res, now)
    totals: Counts = {}
    for _, c in rows:
        add_into(totals, c)

    answered: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for k, v in totals.items():
        p = k.split("|")
        if p[0] == "req":
            (answered if p[3] == "ok" else errors)[p[1] if p[3] == "ok" else f"{p[2]} ({p[3]})"] += int(v)
    rejections = {k.split("|", 1)[1]: int(v) for k, v in totals.items() if k.startswith("rej|")}
    fallbacks = {f"{k.split('|')[1]} → {k.split('|')[2]}": int(v) for k, v in totals.items() if k.startswith("fb|")}

    # Money and energy against every answer going to the cloud: the same tokens, at the cloud's price and joules.
    prompt = sum(v for k, v in totals.items() if k.startswith("tok|") and k.endswith("|prompt"))
    completion = sum(v for k, v in totals.items() if k.startswith("tok|") and k.endswith("|completion"))
    spent = sum(v for k, v in totals.items() if k.startswith("usd|"))
    cloud = gateway.cfg.cloud
    baseline = cost_usd(cloud, Usage(int(prompt), int(completion))) if cloud is not None else 0.0
    e = gateway.cfg.energy
    used_j = sum(v for k, v in totals.items() if k.startswith("j|") and not k.startswith("j|shadow|"))
    shadow_j = sum(v for k, v in totals.items() if k.startswith("j|shadow|"))
    base_j = cloud_energy(int(prompt), int(completion), e.cloud_joules_per_output_token, e.cloud_joules_per_input_token).joules

    lat, ttft = _latency(totals, "lat"), _latency(totals, "ttft")
    latency = {
        route: {
            "p50_ms": _ms(quantile_from_buckets(lat.get(route, {}), 0.5)),
            "p95_ms": _ms(quantile_from_buckets(lat.get(route, {}), 0.95)),
            "ttft_p50_ms": _ms(quantile_from_buckets(ttft.get(route, {}), 0.5)),
            "ttft_p95_ms": _ms(quantile_from_buckets(ttft.get(route, {}), 0.95)),
        }
        for route in sorted(set(lat) | set(ttft))
    }

    n = sum(answered.values())
    to_cloud = answered.get("cloud", 0) + answered.get("collab", 0)
    first = res.start_of(now) - res.span_s + res.bucket_s
    series_t = list(range(first, res.start_of(now) + 1, res.bucket_s))
    index = {t: i for i, t in enumerate(series_t)}
    series: dict[str, list[int]] = {r: [0] * len(series_t) for r in (*ROUTES, "refused", "errors")}
    for t, c in rows:
        i = index.get(t)
        if i is None:
            continue
        for k, v in c.items():
            p = k.split("|")
            if p[0] == "req":
                name = p[1] if p[3] == "ok" else "errors"
                series.setdefault(name, [0] * len(series_t))[i] += int(v)
            elif p[0] == "rej":
                series["refused"][i] += int(v)
    return {
        "object": "hybridgate.ui.overview",
        "window": res.name,
        "bucket_s": res.bucket_s,
        "generated_at": round(now, 3),
        "history": sampler.kind,
        "requests": {
            "answered": n,
            "by_route": {r: answered.get(r, 0) for r in sorted({*ROUTES, *answered})},
            "by_mode": {k.split("|", 1)[1]: int(v) for k, v in totals.items() if k.startswith("mode|")},
            "refused": sum(rejections.values()),
            "errors": sum(errors.values()),
            "cache_hits": int(totals.get("hit|", 0)),
        },
        "cloud_share": {"actual": None if n == 0 else _r(to_cloud / n, 4), "target": gateway.cfg.router.cloud_share},
        "money": {"spent_usd": _r(spent, 8), "all_cloud_usd": _r(baseline, 8), "saved_usd": _r(baseline - spent, 8)},
        "energy": {"used_j": _r(used_j, 3), "all_cloud_j": _r(base_j, 3), "saved_j": _r(base_j - used_j, 3), "shadow_j": _r(shadow_j, 3)},
        "latency": latency,
        "rejections": rejections,
        "errors": dict(errors),
        "fallbacks": fallbacks,
        "series": {"t": series_t, **series},
    }


def _joules(d: dict[str, Any]) -> float:
    return round(sum(float(s.get("joules") or 0.0) for s in (d.get("energy") or {}).values()), 4)


def decision_row(d: dict[str, Any], feedback: float | None = None) -> dict[str, Any]:
    """One table row: what was decided and what it took, from a fixed list of fields; ``feedback`` is the user's
    rating of the answer (kept apart from the log, see :func:`with_feedback`), None where there is none."""
    dec = d.get("decided") or {}
    signals = sorted(dec.get("signals") or [], key=lambda s: -abs(float(s.get("push") or 0.0)))[:3]
    fb = d.get("fallback") or {}
    return {
        "id": d.get("id"),
        "ts": d.get("ts"),
        "tenant": d.get("key"),
        "user": d.get("user"),
        "status": d.get("status"),
        "route": d.get("route"),
        "mode": dec.get("mode"),
        "backend": d.get("backend"),
        "score": dec.get("score"),
        "threshold": dec.get("threshold"),
        "t_local": dec.get("t_local"),
        "signals": [{"name": s.get("name"), "push": s.get("push")} for s in signals],
        "reasons": list(dec.get("reasons") or []),
        "tokens": int(d.get("prompt_tokens") or 0) + int(d.get("completion_tokens") or 0),
        "latency_ms": d.get("latency_ms"),
        "energy_j": _joules(d),
        "cost_usd": d.get("cost_usd"),
        "fallback": {"from": fb.get("from"), "reason": fb.get("reason")} if fb else None,
        "cache": d.get("cache"),
        "feedback": feedback,
    }


async def with_feedback(gateway: Gateway, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's rating, read for all the rows in one go: ratings arrive after their decision was logged, so
    they live in the store beside the log (the log itself is never rewritten)."""
    found = await gateway.state.ratings([str(r["id"]) for r in rows if r.get("id")])
    for r in rows:
        r["feedback"] = found.get(str(r.get("id")))
    return rows


def explanation(d: dict[str, Any], feedback: float | None = None) -> dict[str, Any]:
    """The whole decision: every reason, signal, node estimate, threshold, fallback, energy side and the
    collaboration's report, as the gateway logged it (the log holds no text of the conversation)."""
    dec = d.get("decided") or {}
    return {
        **decision_row(d, feedback),
        "object": "hybridgate.ui.decision",
        "decision_ms": d.get("decision_ms"),
        "prompt_tokens": d.get("prompt_tokens"),
        "completion_tokens": d.get("completion_tokens"),
        "decided": {
            k: dec.get(k)
            for k in (
                "route", "backend", "score", "threshold", "t_local", "mode", "cloud_backend", "fallbacks", "personal_data",
                "private", "router", "router_version", "reasons", "signals", "nodes",
            )
        },
        "energy": d.get("energy") or {},
        "collaboration": d.get("collaboration"),
    }


async def _newer_than(gateway: Gateway, since: float, cap: int) -> list[dict[str, Any]]:
    """The decisions logged after ``since``: reads grow until they reach it, so an update reads what is new."""
    n = 32
    while True:
        recent = await gateway.state.recent_decisions(n)
        if len(recent) < n or n >= cap or (recent[-1].get("ts") or 0) <= since:
            return recent
        n = min(cap, n * 4)


# A filter reads through the log: all of it in memory; from Redis the newest 2,000, so one dashboard read stays
# well inside the store's timeout (reading 10,000 records took longer than 0.5 s on a busy 2-core machine, and a
# timed-out read would send the gateway's state to its memory fallback).
REDIS_SCAN = 2000


async def decisions(gateway: Gateway, limit: int, route: str | None, tenant: str | None, since: float | None) -> dict[str, Any]:
    size = gateway.cfg.state.decision_log_size
    if gateway.state.kind != "memory":
        size = min(size, REDIS_SCAN)
    if since is not None:
        recent = await _newer_than(gateway, since, size)
    else:
        recent = await gateway.state.recent_decisions(size if route or tenant else limit)
    rows: list[dict[str, Any]] = []
    tenants: Counter[str] = Counter()
    for d in recent:
        tenants[str(d.get("key"))] += 1
        if route and d.get("route") != route:
            continue
        if tenant and d.get("key") != tenant:
            continue
        if since is not None and (d.get("ts") or 0) <= since:
            continue
        if len(rows) < limit:
            rows.append(decision_row(d))
    newest = max((float(d.get("ts") or 0) for d in recent), default=since)
    return {"object": "list", "data": await with_feedback(gateway, rows), "tenants": sorted(tenants)[:200], "scanned": len(recent), "newest_ts": newest}


async def find_decision(gateway: Gateway, request_id: str) -> dict[str, Any] | None:
    size = gateway.cfg.state.decision_log_size if gateway.state.kind == "memory" else min(gateway.cfg.state.decision_log_size, REDIS_SCAN)
    for d in await gateway.state.recent_decisions(size):
        if d.get("id") == request_id:
            return explanation(d, (await gateway.state.ratings([request_id])).get(request_id))
    return None


async def feedback_of(gateway: Gateway, request_ids: list[str]) -> dict[str, Any]:
    """The ratings of answers the page already shows: a rating comes after its row, which an update that reads
    only newer decisions would never bring."""
    found = await gateway.state.ratings(request_ids)
    return {"object": "hybridgate.ui.feedback", "data": {i: found.get(i) for i in request_ids}}


def _router_header(gateway: Gateway) -> dict[str, Any]:
    model = getattr(gateway.policy.scorer, "model", None)
    meta = dict(getattr(model, "meta", None) or {})
    return {k: meta.get(k) for k in ("name", "version", "created", "embedder", "training", "metrics")} | {
        "published_node_weights": meta.get("node_weights"),
    }


def pgr_curve(metrics: dict[str, Any] | None) -> list[list[float]]:
    """The PGR curve as the router's report pins it: no gain at no cloud calls, half at cpt50, 80% at cpt80,
    all of it with every call to the cloud. Points are (share of calls to the cloud, PGR)."""
    if not metrics or metrics.get("cpt50") is None or metrics.get("cpt80") is None:
        return []
    return [[0.0, 0.0], [float(metrics["cpt50"]), 0.5], [float(metrics["cpt80"]), 0.8], [1.0, 1.0]]


async def router_view(gateway: Gateway, sampler: Any, label_limit: int = 10_000) -> dict[str, Any]:
    info = gateway.router_info()
    header = _router_header(gateway)
    labels = await gateway.state.labels(label_limit)
    by_kind: Counter[str] = Counter(f"{lab.get('source')}:{lab.get('label')}" for lab in labels)
    rc = gateway.cfg.router
    return {
        "object": "hybridgate.ui.router",
        "active": {"name": info.get("name"), "version": info.get("version"), "previous": info.get("previous")},
        "model": header,
        "pgr_curve": pgr_curve(header.get("metrics")),
        "thresholds": {
            "t_cloud": info.get("threshold"),
            "t_local": info.get("t_local"),
            "cloud_share_target": rc.cloud_share,
            "recalibrate_every": rc.recalibrate_every,
            "history": list(sampler.thresholds),
        },
        "reloads": info.get("reloads") or [],
        "labels": {"total": len(labels), "by_kind": dict(sorted(by_kind.items()))},
        "correction": {"adapted": info.get("adapted"), "last": info.get("adapter")},
    }


def nodes_view(gateway: Gateway) -> dict[str, Any]:
    backends = gateway.describe()
    choice = gateway.describe_nodes()
    header = _router_header(gateway)
    return {
        "object": "hybridgate.ui.nodes",
        "backends": {
            name: {"route": gateway.backends[name].route.value, "model": gateway.backends[name].model_id, **desc}
            for name, desc in backends.items()
        },
        "choice": choice,
        "fleet": {
            "router_version": header.get("version"),
            "router_name": header.get("name"),
            "published_node_weights": header.get("published_node_weights"),
            "training": header.get("training"),
        },
    }
