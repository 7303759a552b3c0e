"""Assemble a gateway from its configuration."""

from __future__ import annotations

from hybridgate.router import RoutingPolicy, RuleScorer
from hybridgate.serving.backends.base import Backend
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.config import GatewayConfig, RemoteConfig
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.metrics import Metrics
from hybridgate.serving.state import open_state


def build_remote(cfg: RemoteConfig) -> Backend:
    if cfg.transport == "openai":
        from hybridgate.serving.backends.remote_openai import OpenAIHTTPBackend

        return OpenAIHTTPBackend(cfg)
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
    )


def build_gateway(cfg: GatewayConfig, *, local: LlamaBackend | None = None) -> Gateway:
    """``local`` lets a caller share one loaded model between several gateways (tests, benchmarks)."""
    remotes = [build_remote(n) for n in cfg.edge_nodes]
    if cfg.cloud is not None:
        remotes.append(build_remote(cfg.cloud))
    policy = RoutingPolicy(RuleScorer(cfg.router.long_prompt_tokens), cfg.router.threshold)
    return Gateway(
        cfg, local or load_local(cfg), remotes, open_state(cfg.state), Metrics(), policy, owns_local=local is None
    )
