"""Configuration: embedded defaults, YAML files, environment overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridgate.serving import config_docs
from hybridgate.serving.config import ConfigError, GatewayConfig, LocalConfig, load_config

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
        ("server:\n  prot: 80\n", "field 'server.prot': unknown key; did you mean 'port'?"),
        ("servr:\n  port: 80\n", "field 'servr': unknown key; did you mean 'server'?"),
        ("nodes:\n  weights: {cpuu: 2}\n", "field 'nodes.weights.cpuu': unknown key; did you mean 'cpu'?"),
        (
            "edge_nodes:\n  - {name: e1, modle: openai/x}\n",
            "field 'edge_nodes.0.modle': unknown key; did you mean 'model'?",
        ),
        ("local:\n  zzz: 1\n", "field 'local.zzz': unknown key; known keys: name, model_path,"),
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


@pytest.mark.parametrize(
    "name,needle",
    [
        ("HYBRIDGATE_SERVER__PROT", "unknown key 'server.prot'; did you mean HYBRIDGATE_SERVER__PORT?"),
        ("HYBRIDGATE_SERVR__PORT", "unknown key 'servr'; did you mean HYBRIDGATE_SERVER__PORT?"),
        (
            "hybridgate_nodes__weights__cpuu",
            "unknown key 'nodes.weights.cpuu'; did you mean HYBRIDGATE_NODES__WEIGHTS__CPU?",
        ),
        ("HYBRIDGATE_EDGE_NODES__0__NAME", "'edge_nodes' is a list: set it whole, as JSON, in HYBRIDGATE_EDGE_NODES"),
    ],
)
def test_unknown_environment_key_names_the_nearest(monkeypatch: pytest.MonkeyPatch, name: str, needle: str) -> None:
    monkeypatch.setenv(name, "2")
    with pytest.raises(ConfigError) as info:
        load_config(None)
    msg = str(info.value)
    assert msg.startswith(f"environment: {name}: ") and needle in msg and "\n" not in msg


def test_other_tools_variables_are_not_config_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's client key and the compose file's variables share the prefix but have no `__`."""
    monkeypatch.setenv("HYBRIDGATE_API_KEY", "client-side")
    monkeypatch.setenv("HYBRIDGATE_REPLICAS", "4")
    assert load_config(None) == GatewayConfig()


def test_documented_environment_names_set_their_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's environment column, spot-checked at each depth and through the optional cloud section."""
    keys = {k.dotted: k for k in config_docs.keys()}
    for dotted, value in [("nodes.weights.cpu", "2.5"), ("cloud.model", "openai/x"), ("router.threshold", "0.4")]:
        name = config_docs.env_names(keys[dotted]).strip("`")
        monkeypatch.setenv(name, value)
    cfg = load_config(None)
    assert cfg.nodes.weights.cpu == 2.5 and cfg.cloud is not None and cfg.cloud.model == "openai/x"
    assert cfg.router.threshold == 0.4


def test_every_key_is_described() -> None:
    undescribed = [k.dotted for k in config_docs.keys() if not (k.field.description or "").strip()]
    assert not undescribed
    assert len(list(config_docs.keys())) > 100  # the walk reaches nested sections and the edge nodes' keys


@pytest.mark.parametrize("rel", sorted(config_docs.generated()))
def test_checked_in_file_is_what_the_generator_writes(rel: str) -> None:
    """docs/configuration.md and configs/default.yaml come from the descriptions in serving/config.py."""
    assert (ROOT / rel).read_text(encoding="utf-8") == config_docs.generated()[rel], (
        f"{rel} is stale: run `python -m hybridgate.serving.config_docs` and commit the result"
    )


def test_generator_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config_docs.main(["--root", str(tmp_path), "--check"]) == 1
    assert "stale: docs/configuration.md, configs/default.yaml" in capsys.readouterr().err
    assert config_docs.main(["--root", str(tmp_path)]) == 0
    assert config_docs.main(["--root", str(tmp_path), "--check"]) == 0


def test_context_overflow_is_described_as_the_gateway_answers() -> None:
    """The documented status and code are the ones the error mapping gives a prompt the local model cannot hold."""
    from hybridgate.serving.app import to_api_error
    from hybridgate.serving.backends.base import PromptTooLong

    err = to_api_error(PromptTooLong("local", 3000, 2032))
    assert f"{err.status} `{err.code}`" in (LocalConfig.model_fields["context_overflow"].description or "")
