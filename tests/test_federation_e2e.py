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
import threading
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

    sources = [
        ["--labels-file", str(tmp_path / f"gw{i}.npz"), "--node-weights-file", str(tmp_path / f"nodes{i}.json")] for i in (0, 1)
    ] + [["--gateway-url", gateway.url]]  # its gateway has learnt from no answers yet: its weights do not count
    # Without secure aggregation (three gateways are under its minimum cohort): the server and each gateway must say so.
    sources = [[*source, "--allow-plain"] for source in sources]
    server, out = federate(
        ["--publish", str(published), "--rounds", "2", "--min-clients", "3", "--no-secure-agg"], sources, {"HYBRIDGATE_API_KEY": KEY}
    )
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


def federate(
    server_args: list[str], sources: list[list[str]], client_env: dict[str, str], logs: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """``hybridgate fl server`` with one ``fl client`` per source (started in order), on 127.0.0.1; the server's
    process and its output once it has stopped, every SuperNode (and what it started) stopped too. Each client's
    output goes to ``logs/client<i>.log`` when ``logs`` is given."""
    port = free_port()
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    server = subprocess.Popen(
        [HG, "fl", "server", *server_args, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its SuperLink and the processes that starts go with it, even on a failed run
    )
    clients = []
    lines: list[str] = []

    def read() -> None:
        for line in server.stdout or []:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Gateways join once the SuperLink is up and has registered the keys it trusts (it says so).
        deadline = time.monotonic() + 60
        while not any("waiting for" in line for line in list(lines)) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        for i, source in enumerate(sources):
            sink = open(logs / f"client{i}.log", "w") if logs else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
            clients.append(subprocess.Popen(
                [HG, "fl", "client", "--superlink", f"127.0.0.1:{port}", "--port", str(free_port()), *source],
                env={**env, **client_env}, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            ))
            time.sleep(0.5)
        server.wait(timeout=240)
        reader.join(timeout=10)
    finally:
        for c in clients:  # each SuperNode and the helper processes it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.pid, signal.SIGTERM)
        for c in clients:
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(c.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL if server.poll() is None else signal.SIGTERM)
        server.wait(timeout=10)
    return server, "".join(lines)


def _tls_and_keys(folder: Path, nodes: int) -> list[tuple[Path, Path]]:
    """A CA, the SuperLink's certificate for 127.0.0.1 signed by it (ca.crt, server.pem, server.key), and one
    OpenSSH ECDSA key pair a SuperNode: what an operator makes with openssl and ssh-keygen (README)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("hybridgate test CA")).issuer_name(name("hybridgate test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir()
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pairs = []
    for i in range(nodes):
        node = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / f"node{i}", folder / f"node{i}.pub"
        private.write_bytes(node.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        public.write_bytes(node.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        pairs.append((private, public))
    return pairs


def test_over_tls_only_registered_gateways_join(query_embedder: Embedder, tmp_path: Path) -> None:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    x = query_embedder.encode(list(data.prompts))
    shipped = load_router(resolve_router(None))  # the default: what `fl server` starts from with no --base-router
    base = shipped.score(x, list(data.prompts))
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=x, label=data.label, base_score=base, router_version=shipped.version)
    tls = tmp_path / "tls"
    *members, (stranger, _) = _tls_and_keys(tls, 5)
    (k0, p0) = members[0]
    published = tmp_path / "router"
    ca = ["--root-certificates", str(tls / "ca.crt"), "--labels-file", str(labels)]
    # The stranger dials first with a well-formed key the SuperLink never registered; it must not take part. The four
    # registered gateways train under secure aggregation (the default) with DP: each clips its own update.
    registered = [arg for _, public in members for arg in ("--supernode-key", str(public))]
    server, out = federate(
        ["--publish", str(published), "--rounds", "1", "--min-clients", "4", "--tls-dir", str(tls), "--dp-noise", "2.2", *registered],
        [[*ca, "--auth-key", str(stranger)], *[[*ca, "--auth-key", str(private)] for private, _ in members]], {}, logs=tmp_path,
    )
    assert "Failed to activate SuperNode" in (tmp_path / "client0.log").read_text()  # the stranger was turned away
    assert server.returncode == 0, out[-3000:]
    assert "Secure aggregation completed" in out and "received 4 results and 0 failures" in out, out[-3000:]
    assert "received 5 results" not in out, out[-3000:]
    header = json.loads((published / "router.json").read_text())
    assert header["fleet"]["trained_on"] == shipped.version
    dp = header["training"]["differential_privacy"]  # and under user-level DP, with the privacy spent on record
    assert dp["noise_multiplier"] == 2.2 and dp["clip"] == 1.0 and 0 < dp["epsilon"] < 8 and "gateway" in dp["clipping"]
    sa = header["training"]["secure_aggregation"]
    assert sa["protocol"].startswith("SecAgg+") and sa["survivors"] == [4] and sa["min_cohort"] == 4
    assert len(header["calibration"]["quantiles"]) == 101 and "secure aggregation" in header["calibration"]["source"]
    # A cohort under the minimum, or a robust aggregator that must see each update, is refused in one line.
    from typer.testing import CliRunner

    from hybridgate.cli import app

    for args, why in ((["--min-clients", "3"], "at least 4 gateways"), (["--strategy", "trimmed-mean", "--min-clients", "5"], "use fedavg or fedprox")):
        r = CliRunner().invoke(app, ["fl", "server", "--publish", str(tmp_path / "p"), *args])
        assert r.exit_code != 0 and why in r.output and len(r.output.strip().splitlines()) == 1, r.output
    # Without TLS a key means nothing to Flower: refused up front, in one line.
    r = CliRunner().invoke(app, ["fl", "server", "--publish", str(tmp_path / "p"), "--min-clients", "4", "--supernode-key", str(p0)])
    assert r.exit_code != 0 and "needs --tls-dir" in r.output
    r = CliRunner().invoke(app, ["fl", "client", "--auth-key", str(k0)])
    assert r.exit_code != 0 and "needs --root-certificates" in r.output
    r = CliRunner().invoke(app, ["fl", "server", "--publish", str(tmp_path / "p"), "--min-clients", "4", "--tls-dir", str(tmp_path)])
    assert r.exit_code != 0 and "missing ca.crt, server.pem, server.key" in r.output
