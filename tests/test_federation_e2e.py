"""The loop end to end: labels on a gateway, a federated round over a real SuperLink and three SuperNodes on
127.0.0.1, and the running gateway serving the new router without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from hybridgate.classifiers.artifact import load_router, resolve_router
from hybridgate.classifiers.data import load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.federated.partition import assign
from tests.conftest import ServerThread, free_port

FIXTURE = Path(__file__).parent / "fixtures" / "routing"
HG = str(Path(sys.executable).parent / "hybridgate")
KEY = "gw-e2e-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_superlink_and_three_supernodes_train_and_the_gateway_hot_reloads(
    make_gateway: Callable[..., ServerThread], query_embedder: Embedder, tmp_path: Path
) -> None:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    x = query_embedder.encode(list(data.prompts))
    published = tmp_path / "router"
    shutil.copytree(resolve_router("blend-static"), published)  # the router every gateway ships with
    shipped = load_router(published)
    # What each label records: the shipped router's score of the query then, and its version.
    base = shipped.score(x, list(data.prompts), [1] * len(data))
    part = assign(data.prompts, data.groups, 3, "by-subject")
    for i in (0, 1):  # two devices train from exported label files, and send the node weights their gateways learnt
        mine = part == i
        np.savez(tmp_path / f"gw{i}.npz", x=x[mine], label=data.label[mine], base_score=base[mine], router_version=shipped.version)
        weights = {"intercept_ms": 10.0 * i, "cpu": 0.4 + 0.2 * i, "ai": 1.2, "nl": 2.0}
        (tmp_path / f"nodes{i}.json").write_text(json.dumps({"weights": weights, "answers_learnt": 100}))

    # A gateway with keys: its SuperNode reads the key from the environment, never from its command line.
    gateway = make_gateway(router={"path": str(published), "watch_s": 0.3}, server={"api_keys": [KEY]})
    gw = gateway.gateway  # type: ignore[attr-defined]
    mine = part == 2  # the third device trains on the labels its running gateway holds
    for vec, label, score in zip(x[mine], data.label[mine], base[mine], strict=True):
        asyncio.run(gw.state.add_label({
            "embedder": query_embedder.name, "vector": vec.tolist(), "label": int(label),
            "base_score": float(score), "router_version": shipped.version,
        }))
    # A label made under another router says nothing about this one's scores: the device leaves it out.
    asyncio.run(gw.state.add_label({"embedder": query_embedder.name, "vector": x[0].tolist(), "label": 1, "base_score": 0.0,
                                    "router_version": "an-older-router"}))
    before = httpx.get(f"{gateway.url}/readyz", headers=AUTH).json()["router"]["version"]
    assert before == shipped.version
    assert httpx.get(f"{gateway.url}/v1/hybridgate/labels").status_code == 401
    served = httpx.get(f"{gateway.url}/v1/hybridgate/labels", params={"limit": 5}, headers=AUTH).json()["data"]
    assert len(served) == 5 and "prompt" not in served[0]

    port = free_port()
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    server = subprocess.Popen(
        [HG, "fl", "server", "--publish", str(published), "--rounds", "2", "--min-clients", "3", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    clients = []
    try:
        time.sleep(3)
        sources = [
            ["--labels-file", str(tmp_path / f"gw{i}.npz"), "--node-weights-file", str(tmp_path / f"nodes{i}.json")] for i in (0, 1)
        ] + [["--gateway-url", gateway.url]]  # its gateway has learnt from no answers yet: its weights do not count
        for i, source in enumerate(sources):
            clients.append(subprocess.Popen(
                [HG, "fl", "client", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()), *source],
                env={**env, "HYBRIDGATE_API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            ))
        out, _ = server.communicate(timeout=240)
    finally:
        for c in clients:  # each SuperNode and the helper processes it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.pid, signal.SIGTERM)
        for c in clients:
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(c.pid, signal.SIGKILL)
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, out[-3000:]
    # Every round heard from all three, the keyed gateway's SuperNode included (its key came from the environment).
    assert out.count("Received 3 results and 0 failures") >= 2, out[-3000:]
    header = json.loads((published / "router.json").read_text())
    assert header["training"]["federated"] is True and header["training"]["rounds"] == 2 and header["training"]["clients"] == 3
    # The published router is the shipped one with the fleet's correction on top: same head, same embedder.
    assert header["head"] == json.loads((resolve_router("blend-static") / "router.json").read_text())["head"]
    assert header["fleet"]["trained_on"] == shipped.version and header["training"]["base"]["version"] == shipped.version
    assert len(header["calibration"]["quantiles"]) == 101  # pooled from the gateways' own score quantiles
    assert header["node_weights"] == {"intercept_ms": 5.0, "cpu": 0.5, "ai": 1.2, "nl": 2.0, "gateways": 2, "answers": 200}
    deadline = time.monotonic() + 15
    while httpx.get(f"{gateway.url}/readyz", headers=AUTH).json()["router"]["version"] != header["version"] and time.monotonic() < deadline:
        time.sleep(0.2)
    ready = httpx.get(f"{gateway.url}/readyz", headers=AUTH).json()["router"]
    assert ready["version"] == header["version"] and ready["previous"] == before, ready
    # Judged on this gateway's own labels, from the score each query got under the shipped router: at least as good.
    judged = gw.watcher.history[-1]
    assert judged["outcome"] == "loaded" and judged["labels"] == int(mine.sum()), judged
    assert judged["auc_new"] >= judged["auc_current"], judged
    r = httpx.post(f"{gateway.url}/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "hi"}]}, headers=AUTH)
    assert r.json()["router_version"] == header["version"]
    # With too few answers of its own to judge, the gateway takes the fleet's node weights with the router.
    assert httpx.get(f"{gateway.url}/v1/hybridgate/nodes", headers=AUTH).json()["weights"] == {"intercept_ms": 5.0, "cpu": 0.5, "ai": 1.2, "nl": 2.0}
