"""The configuration reference and ``configs/default.yaml``, generated from the settings models.

Each key is described once, in its ``Field(description=...)`` in ``serving/config.py``;
this module writes the two files a user reads from those descriptions, so they cannot
drift from the code (``tests/test_config.py`` fails when a checked-in copy differs).

    python -m hybridgate.serving.config_docs            # rewrite both files under the current folder
    python -m hybridgate.serving.config_docs --check    # exit 1, naming the stale files
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hybridgate.serving.config import CONVENTIONAL_ENV, ENV_PREFIX, GatewayConfig, section_model

REFERENCE = "docs/configuration.md"
DEFAULT_YAML = "configs/default.yaml"
WIDTH = 120  # the longest line either file gets
COMMENT_COLUMN = 28  # where a YAML comment starts when it fits on the key's line
SOURCE = "serving/config.py"
COMMAND = "python -m hybridgate.serving.config_docs"


@dataclass(frozen=True)
class Key:
    """One documented key: a section, a sub-section or a value."""

    path: tuple[str, ...]  # ("edge_nodes", "[]", "name") for a field of each list item
    field: FieldInfo
    model: type[BaseModel] | None  # the section it opens, if any
    listed: bool  # a list of such sections (edge_nodes)

    @property
    def dotted(self) -> str:
        return ".".join(self.path).replace(".[]", "[]")

    @property
    def in_list(self) -> bool:
        return "[]" in self.path

    @property
    def description(self) -> str:
        text = self.field.description
        if not text:
            raise ValueError(f"{SOURCE}: key '{self.dotted}' has no Field(description=...)")
        return " ".join(text.split()).replace("``", "`")  # a class docstring's literals, as Markdown writes them

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)


def keys(model: type[BaseModel] = GatewayConfig, where: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every key under ``model``, depth first, in the order the model declares them."""
    for name, field in model.model_fields.items():
        inner, listed = section_model(field.annotation)
        key = Key((*where, name), field, inner, listed)
        yield key
        if inner is not None:
            yield from keys(inner, (*key.path, "[]") if listed else key.path)


def env_names(key: Key) -> str:
    """The environment variables that set ``key``, as Markdown (none for a field of one item of a list)."""
    if key.in_list:
        return "—"
    complex_ = get_origin(key.field.annotation) in (list, dict)
    names = [f"`{ENV_PREFIX}{'__'.join(key.path).upper()}`" + (" (JSON)" if complex_ else "")]
    if len(key.path) == 2 and (conventional := CONVENTIONAL_ENV.get((key.path[0], key.path[1]))):
        names.append(f"`{conventional}`" + (" (comma-separated)" if complex_ else ""))
    return ", or ".join(names)


def yaml_value(value: Any) -> str:
    """A default as it is written in YAML (flow style for lists and mappings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return yaml.safe_dump(value, width=10_000).removesuffix("\n").removesuffix("\n...")
    if isinstance(value, list | dict):
        return json.dumps(value)
    raise TypeError(f"no YAML form for a default of type {type(value).__name__}")


def _bounds(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for cls, sign in (
            (annotated_types.Ge, "≥"),
            (annotated_types.Gt, ">"),
            (annotated_types.Le, "≤"),
            (annotated_types.Lt, "<"),
        ):
            if isinstance(m, cls):
                parts.append(f"{sign} {getattr(m, cls.__name__.lower())}")
    return f" ({', '.join(parts)})" if parts else ""


def type_name(annotation: Any) -> str:
    """A type as a reader of YAML thinks of it."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}"
    if args:  # a union: X | None
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """The configuration reference page (Markdown)."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the descriptions in {SOURCE} by `{COMMAND}`: edit them there, not here. -->",
        "",
        "`hybridgate serve` runs on embedded defaults. `--config FILE` reads a YAML file whose keys override them",
        f"(`{DEFAULT_YAML}` writes out every default; the other files in `configs/` are examples),",
        "and environment variables override the file: `HYBRIDGATE_<SECTION>__<KEY>=value` (nested keys joined by",
        "`__`, any case; lists and mappings as JSON). A key that does not exist, in the file or in the environment,",
        "stops the gateway with one line that names the nearest existing key.",
        "",
    ]
    for key in keys():
        if len(key.path) == 1:
            out += ["", f"## `{key.dotted}`", "", key.description, ""]
            if key.model is not None:
                out += ["| key | type | default | environment | description |", "|---|---|---|---|---|"]
            if key.listed:
                env = env_names(key).replace("(JSON)", "(the whole list, as JSON)")
                out.append(f"| `{key.dotted}` | list of sections | `[]` | {env} | each item has the keys below |")
            continue
        kind = "section" if key.model is not None else type_name(key.field.annotation) + _bounds(key.field)
        if key.field.is_required():
            default = "required"
        else:
            default = "" if key.model is not None else f"`{yaml_value(key.default)}`"
        out.append(
            f"| `{key.dotted}` | {_cell(kind)} | {_cell(default)} | {env_names(key)} | {_cell(key.description)} |"
        )
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


def _yaml_line(indent: str, text: str, description: str) -> list[str]:
    """``text`` with its description as a comment: on the same line where it fits, else wrapped above it."""
    head = f"{indent}{text}"
    inline = head + " " * max(2, COMMENT_COLUMN - len(head)) + f"# {description}"
    if len(inline) <= WIDTH:
        return [inline]
    wrapped = textwrap.wrap(description, WIDTH - len(indent) - 2, break_on_hyphens=False)
    return [f"{indent}# {line}" for line in wrapped] + [f"{indent}{text}"]


def default_yaml() -> str:
    """``configs/default.yaml``: every key at its embedded default, described."""
    out = [
        "# hybridgate's embedded defaults, spelled out: `hybridgate serve` with no --config runs on exactly this.",
        "# Any key can be overridden from the environment: HYBRIDGATE_<SECTION>__<KEY>,",
        "# e.g. HYBRIDGATE_SERVER__PORT=9000 (lists and mappings as JSON).",
        f"# Generated from the descriptions in {SOURCE} by `{COMMAND}`;",
        f"# each key is explained, with its type and limits, in {REFERENCE}.",
    ]
    for key in keys():
        if key.in_list:
            continue
        indent = "  " * (len(key.path) - 1)
        name = key.path[-1]
        if len(key.path) == 1:
            out.append("")
        if key.model is not None and not key.listed and key.default is not None:
            out += _yaml_line(indent, f"{name}:", key.description)
        else:
            out += _yaml_line(indent, f"{name}: {yaml_value(key.default)}", key.description)
        if key.listed and key.model is not None:
            required = ", ".join(f"{k}: ..." for k, f in key.model.model_fields.items() if f.is_required())
            out.append(f"{indent}# e.g. [{{{required}}}]; each item's keys are listed in {REFERENCE}.")
    return "\n".join(out) + "\n"


def generated() -> dict[str, str]:
    """Each generated file's path (relative to the repository) and its text."""
    return {REFERENCE: reference(), DEFAULT_YAML: default_yaml()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository's folder (default: here)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is not what it would be")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in generated().items():
        path = args.root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run `{COMMAND}`)", file=sys.stderr)
        return 1
    for rel in stale:
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
