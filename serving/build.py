"""Assemble a gateway from its configuration."""

from __future__ import annotations

from hybridgate.classifiers.embedder import CachedEmbedder, Embedder, load_embedder
from hybridgate.router import Mode, RoutingPolicy, RuleScorer, Scorer
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.backends.base import Backend
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.backends.pricing import prices_per_1k
from hybridgate.serving.backends.providers import resolve_wire
from hybridgate.serving.config import GatewayConfig, PrivacyConfig, RemoteConfig, RouterConfig
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.router_reload import thresholds_for
from hybridgate.serving.state import open_state


def build_remote(cfg: RemoteConfig) -> Backend:
    """The native transport for every OpenAI-wire provider, litellm for the rest (``providers.resolve_wire``)."""
    wire = resolve_wire(cfg.model, cfg.api_base, cfg.transport, cfg.api_key_env)
    if wire.transport == "openai":
        from hybridgate.serving.backends.remote_openai import OpenAIHTTPBackend

        return OpenAIHTTPBackend(cfg, wire)
    from hybridgate.serving.backends.remote_litellm import LitellmBackend

    return LitellmBackend(cfg)


def load_local(cfg: GatewayConfig) -> LlamaBackend:
    c = cfg.local
    return LlamaBackend(
        c.name,
        c.model_path,
        n_ctx=c.n_ctx,
        n_threads=c.n_threads,
        n_batch=c.n_batch,
        max_queue=c.max_queue,
        default_max_tokens=c.default_max_tokens,
        watts_per_core=cfg.energy.watts_per_core,
        n_gpu_layers=c.n_gpu_layers,
    )


def load_query_embedder(cfg: RouterConfig, model: str) -> Embedder:
    return load_embedder(model, cfg.engine, threads=cfg.threads)


def build_policy(cfg: RouterConfig, privacy: PrivacyConfig | None = None, *, embedder: Embedder | None = None) -> RoutingPolicy:
    """The scorer and its threshold. ``embedder`` lets a caller share one loaded model (tests, benchmarks).

    Raises ``ValueError`` (an ``ArtifactError``) when the router folder is missing,
    tampered with, or made for another embedder than the one given.
    """
    from hybridgate.classifiers.artifact import load_router, read_header, resolve_router
    from hybridgate.classifiers.outcome_head import for_pair

    mode = Mode(cfg.mode)
    on_pd = privacy.on_personal_data if privacy else "local"
    if cfg.scorer == "rules":
        threshold = 0.5 if cfg.threshold is None else cfg.threshold
        if cfg.gray_share:
            raise ValueError("router.gray_share needs a classifier router's calibration; with scorer: rules set router.t_local")
        return RoutingPolicy(RuleScorer(cfg.long_prompt_tokens), threshold, cfg.t_local, mode, on_pd, cfg.tools)
    folder = resolve_router(cfg.path)
    header = read_header(folder)
    if embedder is None:
        embedder = load_query_embedder(cfg, str(header["embedder"]["name"]))
    model = for_pair(load_router(folder, embedder=embedder.name, dim=embedder.dim), cfg.local_model, cfg.cloud_model)
    threshold, t_local = thresholds_for(model, cfg)
    scorer: Scorer = ClassifierScorer(model, CachedEmbedder(embedder, cfg.cache_size))
    return RoutingPolicy(scorer, threshold, t_local, mode, on_pd, cfg.tools)


def build_gateway(cfg: GatewayConfig, *, local: LlamaBackend | None = None, embedder: Embedder | None = None) -> Gateway:
    """``local`` and ``embedder`` let a caller share loaded models between several gateways (tests, benchmarks)."""
    remotes = [build_remote(n) for n in cfg.edge_nodes]
    if cfg.cloud is not None:
        remotes.append(build_remote(cfg.cloud))
    for remote in [*cfg.edge_nodes, *([cfg.cloud] if cfg.cloud else [])]:
        prices_per_1k(remote)  # read the price list now, not on the first request's event-loop turn
    policy = build_policy(cfg.router, cfg.privacy, embedder=embedder)
    return Gateway(
        cfg, local or load_local(cfg), remotes, open_state(cfg.state), Metrics(), policy, owns_local=local is None
    )
