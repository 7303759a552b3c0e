"""The wheel that `python -m build` makes installs and serves on its own: package data a source checkout has and
the wheel lacks (the shipped routers, their static vectors, the dashboard's files) fails here, not on a user's
machine.

To stay fast, the clean environment reuses this environment's installed dependencies through a ``.pth`` line
(a path a ``.pth`` file adds has its own ``.pth`` files ignored, so the editable install of the source tree is
not picked up) and gets only the wheel, without dependencies; the test proves which copy it imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
server: {port: PORT}
local: {n_ctx: 512, default_max_tokens: 4}
cloud: null
standin: {enabled: false}
"""


def packaged_sources() -> dict[str, str]:
    """Each file git tracks in the package folders (pyproject's package-dir), by its path inside the wheel."""
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    inside = {folder: package.replace(".", "/") for package, folder in mapping.items()}
    listed = subprocess.run(["git", "ls-files", "-z", *inside], capture_output=True, text=True, cwd=ROOT, check=True)
    out = {}
    for rel in filter(None, listed.stdout.split("\0")):
        folder = max((f for f in inside if rel.startswith(f + "/")), key=len)
        out[inside[folder] + rel.removeprefix(folder)] = rel
    return out


def clean_env() -> dict[str, str]:
    """This process's environment without Python's own variables: Flower's Ray backend puts the whole
    ``sys.path`` of a test that simulated a fleet into ``PYTHONPATH``, checkout included, and the clean venv
    would then import the checkout's ``hybridgate/`` folder instead of the wheel's package."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _run(*cmd: str | Path, cwd: Path, timeout: float = 180) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env()
    )
    assert out.returncode == 0, f"{cmd}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out.stdout


def test_the_wheel_installs_into_a_clean_venv_and_serves(tmp_path: Path) -> None:
    # The build reads a copy of the tracked files: a stale *.egg-info/SOURCES.txt in the checkout would put files
    # in the sdist that the package data no longer lists.
    src, dist = tmp_path / "src", tmp_path / "dist"
    sources = packaged_sources()
    for rel in [*sources.values(), "pyproject.toml", "README.md"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    # The wheel alone (an sdist first would compress the 23 MB of vectors twice).
    _run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--skip-dependency-check",
        "--outdir",
        dist,
        src,
        cwd=tmp_path,
    )
    wheels = list(dist.glob("hybridgate-*.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    # Every file of the package folders ships: the routers, their static vectors, the dashboard, the code.
    shipped = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = sorted(rel for inside, rel in sources.items() if inside not in shipped)
    assert not missing, f"not in the wheel: {missing}"

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    (site / "test-env-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--no-compile",
        wheels[0],
        cwd=tmp_path,
    )

    where = _run(
        python,
        "-c",
        "import hybridgate.classifiers as c, hybridgate as h; print(h.__file__); print(c.__file__)",
        cwd=tmp_path,
    )
    for line in where.split():
        assert Path(line).is_relative_to(venv), f"imported {line}, not the wheel's copy"

    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(CONFIG.replace("PORT", str(port)))
    env = {k: v for k, v in clean_env().items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
    # An empty cache: nothing derived earlier on this machine (distilled vectors) can stand in for missing files.
    env |= {"HYBRIDGATE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [venv / "bin" / "hybridgate", "serve", "--config", config],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        ready: httpx.Response | None = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if ready is None or ready.status_code != 200:
            server.terminate()
            log = server.communicate(timeout=20)[0]
            raise AssertionError(f"not ready ({ready.text if ready is not None else 'no answer'}): {log[-3000:]}")
        assert ready.json()["router"], "the shipped router did not load"
        answer = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-hybridgate-route"] == "local"
        assert answer.json()["choices"][0]["message"]["content"] is not None, json.dumps(answer.json())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
