"""Configuration: embedded defaults, YAML files, environment overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridgate.serving.config import ConfigError, GatewayConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_is_the_embedded_defaults() -> None:
    assert load_config(ROOT / "configs" / "default.yaml") == load_config(None) == GatewayConfig()


@pytest.mark.parametrize("name", ["openai.yaml", "anthropic.yaml", "edge-llamacpp.yaml"])
def test_examples_load(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.cloud is not None and cfg.standin.enabled is False


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 7000\n  host: 127.0.0.1\nlocal:\n  n_threads: 2\n")
    monkeypatch.setenv("HYBRIDGATE_SERVER__PORT", "9001")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("HYBRIDGATE_API_KEYS", "a, b")
    cfg = load_config(f)
    assert cfg.server.port == 9001 and cfg.local.n_threads == 2
    assert cfg.state.redis_url == "redis://127.0.0.1:6379/3"
    assert cfg.server.api_keys == ["a", "b"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("server:\n  port: seventy\n", "field 'server.port'"),
        ("server:\n  prot: 80\n", "field 'server.prot'"),
        ("local:\n  context_overflow: maybe\n", "field 'local.context_overflow'"),
        ("cloud:\n  transport: carrier-pigeon\n", "field 'cloud.transport'"),
        ("edge_nodes:\n  - name: e1\n", "field 'edge_nodes.0.model'"),
        ("edge_nodes:\n  - {name: local, model: openai/x}\n", "backend name 'local' is used twice"),
        ("server: [1, 2\n", "not valid YAML at line"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_wrong_config_gives_one_readable_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and msg.startswith(str(f))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_cloud_can_be_switched_off(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("cloud: null\n")
    assert load_config(f).cloud is None
