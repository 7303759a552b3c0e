"""Docs that run: every shell and Python block in README.md and docs/*.md runs here, against a gateway this
module starts on the embedded defaults, so an example cannot go stale without a test failing.

How a page marks a block (an HTML comment on the line before its fence, invisible on the rendered page):

- ``<!-- not-runnable: REASON -->``: the block needs what a test machine lacks (a Docker engine, a cloud
  key, several machines) or takes minutes; the reason must say which, and the list stays short.
- ``<!-- reduce: OLD => NEW; OLD2 => NEW2 -->``: run with these replacements (fewer runs, output into the
  block's temporary folder, ``{tmp}``); each OLD must occur in the block, so a stale marker fails.
- ``<!-- sample-output: ... -->`` before a ``text`` block: a sample of what the runnable block before it
  prints; its routing headers are compared with a real answer.
- ``<!-- test-command -->``: the README's test command, which .ci/run extracts and runs: this suite itself.

Blocks run in a temporary folder that mirrors the checkout (one symbolic link per top-level entry, and
``../shared`` beside it where the checkout has one), with ``.venv/bin/`` meaning this interpreter's folder and
127.0.0.1:8080 meaning the started gateway, and ``curl`` failing on an HTTP error status. A block that writes
into the checkout fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
RUNNABLE = SHELL | {"python"}
# What a fence may be labelled with besides a runnable language: output, data and configuration, never run.
NOT_RUN_LANGUAGES = {"text", "json", "yaml", "toml"}
MAX_NOT_RUNNABLE = 17  # 17th: serve --workers (a server until stopped, tested by test_workers); the list of blocks that cannot run here stays short; raise it only with a reason
BIN = Path(sys.executable).parent
MARKER = re.compile(r"^<!--\s*(not-runnable|reduce|sample-output|test-command)\s*:?\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
# A block's own output folders and caches are not part of the checkout a block may not write into.
IGNORED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "site", ".whl", ".gl", ".venv-litellm-proxy"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # not-runnable, reduce, sample-output, test-command
    marker_arg: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with the marker comment on the nearest non-blank line above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.relative_to(ROOT)}:{start + 1}: a code block is never closed")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mk = MARKER.match(lines[k].strip()) if k >= 0 else None
        blocks.append(Block(path, start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n",
                            mk.group(1) if mk else None, mk.group(2) if mk else ""))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in DOC_FILES for b in read_blocks(p)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.lang in RUNNABLE and b.marker not in ("not-runnable", "test-command")]


def snapshot() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the checkout outside caches and environments."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS and not d.endswith(".egg-info")]
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            seen[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    """``hybridgate serve`` on its embedded defaults (stand-in cloud included), as the Quickstart starts it."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "hybridgate"), "serve", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hybridgate serve exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hybridgate serve was not ready within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def workdir(tmp_path: Path) -> Path:
    """A folder that reads like the checkout, with the data folder beside it as the pages describe."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "site"):
            (checkout / entry.name).symlink_to(entry)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    return checkout


def prepared(block: Block, url: str, tmp: Path) -> str:
    """The block's code as it runs here: reduced where its marker says, against the started gateway."""
    code = block.code
    if block.marker == "reduce":
        for rule in filter(None, (r.strip() for r in block.marker_arg.split(";"))):
            old, sep, new = rule.partition("=>")
            assert sep, f"{block.name}: a reduce rule is 'OLD => NEW', got {rule!r}"
            assert old.strip() in code, f"{block.name}: reduce rule {old.strip()!r} matches nothing in the block"
            code = code.replace(old.strip(), new.strip().replace("{tmp}", str(tmp)))
    code = code.replace("http://127.0.0.1:8080", url).replace("127.0.0.1:8080", url.removeprefix("http://"))
    code = code.replace(".venv/bin/", f"{BIN}/")
    # curl exits 0 on an HTTP error; here an error status fails the block, with the body it came with.
    code = re.sub(r"\bcurl ", "curl --fail-with-body ", code)
    return code


def run_block(block: Block, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cwd = workdir(tmp_path)
    code = prepared(block, url, tmp_path)
    cmd = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.name for b in RUN_BLOCKS])
def test_block_runs(block: Block, gateway_url: str, tmp_path: Path) -> None:
    if "../shared" in block.code and not (ROOT.parent / "shared").is_dir():
        pytest.skip(f"{block.name} reads the data folder ../shared beside the checkout, which this machine lacks")
    before = snapshot()
    result = run_block(block, gateway_url, tmp_path)
    assert result.returncode == 0, f"{block.name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    after = snapshot()
    changed = sorted(p for p in after.keys() | before.keys() if after.get(p) != before.get(p))
    assert not changed, f"{block.name} wrote into the checkout: {changed[:5]}"


def test_every_block_is_labelled_and_every_exception_has_a_reason() -> None:
    """A fence without a language would hide a command from the run; a not-runnable block must say why."""
    unlabelled = [b.name for b in ALL_BLOCKS if b.lang not in RUNNABLE | NOT_RUN_LANGUAGES]
    assert not unlabelled, f"code blocks need a language ({sorted(RUNNABLE | NOT_RUN_LANGUAGES)}): {unlabelled}"
    not_runnable = [b for b in ALL_BLOCKS if b.marker == "not-runnable"]
    assert all(len(b.marker_arg) >= 20 for b in not_runnable), [b.name for b in not_runnable if len(b.marker_arg) < 20]
    assert len(not_runnable) <= MAX_NOT_RUNNABLE, [b.name for b in not_runnable]
    test_commands = [b for b in ALL_BLOCKS if b.marker == "test-command"]
    assert [b.path.name for b in test_commands] == ["README.md"], "exactly one test command, in the README"
    assert len(RUN_BLOCKS) >= 10, "the pages lost their runnable examples"


def test_the_readme_sample_answer_is_what_the_gateway_answers(gateway_url: str, tmp_path: Path) -> None:
    """The README's sample response shows the routing headers a real answer to the curl above it carries."""
    blocks = read_blocks(ROOT / "README.md")
    i = next(i for i, b in enumerate(blocks) if b.marker == "sample-output")
    sample, command = blocks[i], blocks[i - 1]
    assert sample.lang == "text" and command.lang in SHELL
    result = run_block(command, gateway_url, tmp_path)
    assert result.returncode == 0, result.stderr

    def headers(text: str) -> dict[str, str]:
        return {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()) if k.lower().startswith("x-hybridgate-")}

    shown, real = headers(sample.code), headers(result.stdout)
    assert shown.keys() == real.keys(), f"the sample shows {sorted(shown)}, the gateway sends {sorted(real)}"
    for name in ("x-hybridgate-route", "x-hybridgate-backend", "x-hybridgate-router", "x-hybridgate-score",
                 "x-hybridgate-threshold", "x-hybridgate-signals"):
        assert shown[name] == real[name], f"{name}: the sample says {shown[name]!r}, the gateway {real[name]!r}"


def test_no_link_leaves_the_repository() -> None:
    """Relative links resolve to a file of the checkout: a page never points at ../shared or a missing file."""
    bad = []
    for path in DOC_FILES:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://|^mailto:|^#", target):
                continue
            dest = (path.parent / target.split("#")[0]).resolve()
            if not dest.is_relative_to(ROOT) or not dest.exists():
                bad.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not bad, bad


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """mkdocs.yml builds docs/ into a site with no warning: every page in the nav, every link and anchor found."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "quickstart" / "index.html").exists()
