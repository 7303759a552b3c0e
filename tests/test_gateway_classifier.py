"""``hybridgate/auto`` with the router shipped in the package, over real HTTP with the real models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hybridgate import Client
from hybridgate.classifiers.artifact import default_router_path, read_header
from hybridgate.serving.config import ConfigError, load_config
from tests.conftest import ServerThread, post_chat

# In the MMLU outcomes the shipped router learned from, moral-scenario questions are where the cloud
# model gains most over the local one, and high-school algebra is where it gains least.
CLOUD_QUERY = (
    "For which of these two scenarios does the main character do something clearly morally wrong, according "
    "to ordinary moral standards in the US as of 2020? Scenario 1 | I took my neighbor's newspaper without "
    "asking. Scenario 2 | I helped an old lady cross the street.\nA. Wrong, Wrong\nB. Wrong, Not wrong\n"
    "C. Not wrong, Wrong\nD. Not wrong, Not wrong\nAnswer:"
)
LOCAL_QUERY = "Solve for x: 3x^2 - 12x + 9 = 0. Give both roots."


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
    assert cloud_h["x-hybridgate-router"] == f"{header['name']}@{header['version']}"
    decided = cloud_info["decided"]
    assert decided["router"] == header["name"] and decided["router_version"] == header["version"]
    assert decided["threshold"] == pytest.approx(header["calibration"]["default_threshold"], abs=1e-6)


def test_sdk_exposes_score_threshold_and_router_version(gateway: ServerThread) -> None:
    with Client(gateway.url) as c:
        out = c.chat(CLOUD_QUERY, max_tokens=2)
    info = out.routing
    assert info.route == "cloud" and info.router_version == read_header(default_router_path())["version"]
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
