"""What every command of the CLI shares: one readable line on failure, exit code 2."""

from __future__ import annotations

import importlib.util
import sys
from typing import NoReturn

import typer

# What each extra brings that its commands import; the serving install has none of them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("sklearn", "matplotlib", "sentence_transformers", "torch"),
    "fl": ("flwr", "threadpoolctl", "matplotlib"),
}


def fail(msg: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def need_extra(extra: str, command: str) -> None:
    """Stop a command whose extra is not installed, with the one line that installs it."""
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        fail(f"`hybridgate {command}` needs the {extra} extra ({', '.join(missing)} not installed): pip install 'hybridgate[{extra}]'")
