"""The linter and the type checker run as tests, so the README's test command (and CI) runs them.

Ruff checks the whole tree with the rules in pyproject.toml. Mypy checks ``hybridgate.router`` and
``hybridgate.classifiers`` strictly. Their sources live in top-level folders that setuptools maps into the
package (package-dir), which an editable install exposes through an import hook mypy cannot follow; so mypy
reads them through a tree of links laid out as the installed package is (``hybridgate/router`` -> ``router/``).
By hand: ``python -m pytest -q tests/test_lint.py``, or ``python tests/test_lint.py`` for mypy's own output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRICT_PACKAGES = ("hybridgate.router", "hybridgate.classifiers")


def package_tree(where: Path) -> Path:
    """Links under ``where`` that lay the sources out as the installed package (pyproject's package-dir)."""
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        link = where.joinpath(*package.split("."))
        if package == "hybridgate":
            link.mkdir(parents=True, exist_ok=True)
            for entry in (ROOT / folder).iterdir():
                if entry.name != "__pycache__" and not link.joinpath(entry.name).is_symlink():
                    link.joinpath(entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        elif not link.is_symlink() and not link.parent.is_symlink():  # serving/backends arrives with serving/
            link.symlink_to(ROOT / folder, target_is_directory=True)
    return where


def run_mypy() -> subprocess.CompletedProcess[str]:
    """Mypy on the strict packages; the tree sits in mypy's cache folder, at one place, so the cache holds."""
    cache = ROOT / ".mypy_cache"
    tree = package_tree(cache / "package-tree")
    packages = [arg for p in STRICT_PACKAGES for arg in ("-p", p)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            *packages,
        ],
        capture_output=True,
        text=True,
        cwd=tree,
        env={**os.environ, "MYPYPATH": str(tree)},
        timeout=600,
    )


def test_ruff() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_mypy_strict_on_router_and_classifiers() -> None:
    out = run_mypy()
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


if __name__ == "__main__":
    result = run_mypy()
    print(result.stdout + result.stderr, end="")
    raise SystemExit(result.returncode)
