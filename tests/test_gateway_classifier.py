"""``hybridgate/auto`` with the router shipped in the package, over real HTTP with the real models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hybridgate import Client
from hybridgate.classifiers.artifact import default_router_path, read_header
from hybridgate.serving.config import ConfigError, load_config
from tests.conftest import ServerThread, post_chat

# The default router scores what a query asks for: code to write and mathematics to derive are where the
# cloud gains over a 135M model; a greeting or a one-line lookup is where it gains nothing.
CLOUD_QUERY = (
    "Here is my function:\n```python\ndef parse(s):\n    total = 0\n    for part in s.split('T'):\n        total += int(part[:-1])\n"
    "    return total\n```\nFix it so that it parses an ISO 8601 duration string such as 'P3DT4H5M' into total seconds. "
    "It must handle days, hours, minutes and fractional seconds, reject invalid input with a clear exception, and run in "
    "linear time. Explain step by step why the original fails, derive the regular expression you use, and write unit tests "
    "for at least five edge cases. Then compare this approach with a hand-written state machine: which is faster, "
    "which is easier to maintain, and why would you choose one over the other in a production service?"
)
LOCAL_QUERY = "Hi! How are you today?"


def _ask(url: str, text: str) -> tuple[dict[str, str], dict]:
    r = post_chat(url, {"model": "hybridgate/auto", "messages": [{"role": "user", "content": text}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    return dict(r.headers), r.json()["hybridgate"]


def test_shipped_router_sends_two_different_queries_to_different_routes(gateway: ServerThread) -> None:
    header = read_header(default_router_path())
    cloud_h, cloud_info = _ask(gateway.url, CLOUD_QUERY)
    local_h, local_info = _ask(gateway.url, LOCAL_QUERY)
    assert cloud_h["x-hybridgate-route"] == "cloud" and local_h["x-hybridgate-route"] == "local"
    assert float(cloud_h["x-hybridgate-score"]) >= float(cloud_h["x-hybridgate-threshold"]) > float(local_h["x-hybridgate-score"])
    # A router that scores a pair names the two abilities it uses after its name (here both priors: no pair configured).
    assert cloud_h["x-hybridgate-router"].startswith(header["name"]) and cloud_h["x-hybridgate-router"].endswith(f"@{header['version']}")
    decided = cloud_info["decided"]
    assert decided["router"].startswith(header["name"]) and decided["router_version"] == header["version"]
    assert decided["threshold"] == pytest.approx(header["calibration"]["default_threshold"], abs=1e-6)


def test_sdk_exposes_score_threshold_and_router_version(gateway: ServerThread) -> None:
    with Client(gateway.url) as c:
        out = c.chat(CLOUD_QUERY, max_tokens=2)
    info = out.routing
    assert info.route == "cloud" and info.router_version == read_header(default_router_path())["version"]
    assert info.signals and all(isinstance(n, str) and isinstance(p, float) for n, p in info.signals)
    with Client(gateway.url) as c:
        # A greeting is short too: the rule and the length push it local together, each among the top two.
        assert "greeting" in [name for name, _ in c.route(LOCAL_QUERY).signals[:2]]
    assert info.score is not None and info.threshold is not None and info.score >= info.threshold


def test_cloud_share_sets_the_threshold_from_the_router_calibration(make_gateway: Callable[..., ServerThread]) -> None:
    everything = make_gateway(router={"cloud_share": 1.0})
    nothing = make_gateway(router={"cloud_share": 0.0})
    assert _ask(everything.url, LOCAL_QUERY)[0]["x-hybridgate-route"] == "cloud"
    assert _ask(nothing.url, CLOUD_QUERY)[0]["x-hybridgate-route"] == "local"


def test_router_config_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set threshold or cloud_share, not both"):
        load_config(None, {"router": {"threshold": 0.5, "cloud_share": 0.3}})
    from hybridgate.serving.build import build_policy

    cfg = load_config(None, {"router": {"path": str(tmp_path)}}).router
    with pytest.raises(ValueError, match="not a router folder"):
        build_policy(cfg)


def test_route_names_the_signals_that_moved_the_score(gateway: ServerThread) -> None:
    import httpx

    r = httpx.post(f"{gateway.url}/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": CLOUD_QUERY}]})
    assert r.status_code == 200, r.text
    signals = r.json()["signals"]
    assert 1 <= len(signals) <= 3 and all(isinstance(s["push"], float) for s in signals)
    assert {"length", "code"} & {s["name"] for s in signals}
    assert all(s["push"] > 0 for s in signals if s["name"] in ("length", "code"))
    _, info = _ask(gateway.url, LOCAL_QUERY)
    assert any(s["name"] == "greeting" and s["push"] < 0 for s in info["decided"]["signals"])
