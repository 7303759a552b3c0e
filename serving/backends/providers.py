"""Which wire a remote backend speaks, found from its model string and ``api_base``.

Most providers a gateway talks to (OpenAI, Azure OpenAI, Together, Groq, Fireworks, DeepSeek, Mistral,
OpenRouter, vLLM, a llama.cpp server, Ollama, the stand-in) accept OpenAI's own request body, so the gateway
forwards it over one pooled HTTP connection (:mod:`remote_openai`) and pays no translation layer. Only the
providers whose wire is not OpenAI's (Anthropic, Bedrock, Vertex, Gemini, Cohere, ...) go through litellm.
``transport: auto`` (the default) makes that choice; ``openai`` or ``litellm`` forces one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Transport = Literal["openai", "litellm"]


@dataclass(frozen=True)
class Provider:
    """One provider whose endpoint takes OpenAI's chat-completions body."""

    name: str
    prefixes: tuple[str, ...]  # litellm's provider prefixes for it ("groq/llama-3.1-8b" -> "groq")
    api_base: str | None  # its public endpoint; None: self-hosted, the config must say where
    key_env: str | None  # where its key conventionally lives (litellm reads the same variable)
    auth_header: str = "Authorization"  # Azure takes the key as `api-key`
    base_suffix: str = ""  # appended to an api_base given without it (Ollama's /v1, Azure's /openai/v1)


OPENAI_WIRE: tuple[Provider, ...] = (
    Provider("openai", ("openai",), "https://api.openai.com/v1", "OPENAI_API_KEY"),
    Provider("azure", ("azure",), None, "AZURE_API_KEY", auth_header="api-key", base_suffix="/openai/v1"),
    Provider("together", ("together_ai", "together"), "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    Provider("groq", ("groq",), "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    Provider("fireworks", ("fireworks_ai", "fireworks"), "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    Provider("deepseek", ("deepseek",), "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    Provider("mistral", ("mistral",), "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    Provider("openrouter", ("openrouter",), "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    Provider("vllm", ("hosted_vllm", "vllm"), None, None),
    Provider("openai-compatible", ("openai_like", "custom_openai"), None, None),
    Provider("llama.cpp", ("llamacpp", "llama_cpp"), None, None),
    Provider("ollama", ("ollama", "ollama_chat"), "http://localhost:11434/v1", None, base_suffix="/v1"),
)
_BY_PREFIX = {prefix: p for p in OPENAI_WIRE for prefix in p.prefixes}


@dataclass(frozen=True)
class Wire:
    """What a backend sends where: resolved once, when the gateway is built."""

    transport: Transport
    provider: str
    api_base: str | None
    model: str  # the model name on the wire: without litellm's prefix for the native transport
    key_env: str | None
    auth_header: str = "Authorization"


def _split(model: str) -> tuple[str | None, str]:
    prefix, sep, rest = model.partition("/")
    return (prefix, rest) if sep and rest else (None, model)


def provider_key_env(model: str) -> str | None:
    """The variable an OpenAI-wire provider's key conventionally lives in (None for other providers: litellm
    reads theirs itself)."""
    prefix, _ = _split(model)
    provider = _BY_PREFIX.get(prefix) if prefix else None
    return provider.key_env if provider else None


def auth_header(model: str) -> str:
    """The header an OpenAI-wire provider takes its key in (Azure's ``api-key``; the others a bearer token),
    whichever transport carries the calls: the health probe sends the key as the provider expects it."""
    prefix, _ = _split(model)
    provider = _BY_PREFIX.get(prefix) if prefix else None
    return provider.auth_header if provider else "Authorization"


def key_headers(header: str, key: str | None) -> dict[str, str]:
    """``{header: key}``, as a bearer token when the header is ``Authorization``; none without a key."""
    if not key:
        return {}
    return {header: f"Bearer {key}" if header == "Authorization" else key}


def _base(provider: Provider, api_base: str | None) -> str | None:
    if api_base is None:
        return provider.api_base
    base = api_base.rstrip("/")
    if provider.base_suffix and not base.endswith(provider.base_suffix):
        base += provider.base_suffix
    return base


def resolve_wire(model: str, api_base: str | None, transport: str, api_key_env: str | None = None) -> Wire:
    """The transport and endpoint for ``model``; raises ``ValueError`` with the fix when the native one lacks a base.

    ``auto``: a model string with an OpenAI-wire provider's prefix goes native (to its public endpoint unless
    ``api_base`` says otherwise); a model without a prefix goes native when ``api_base`` names a server (an
    OpenAI-compatible one is what such a config points at) and to litellm otherwise (litellm guesses the
    provider from the bare name); every other prefix (anthropic/, bedrock/, vertex_ai/, gemini/, ...) is litellm's.
    """
    prefix, bare = _split(model)
    provider = _BY_PREFIX.get(prefix) if prefix else None
    if transport == "litellm" or (transport == "auto" and provider is None and (prefix is not None or not api_base)):
        return Wire("litellm", prefix or "litellm", api_base, model, api_key_env)
    if transport not in ("auto", "openai"):
        raise ValueError(f"unknown transport {transport!r}: use auto, openai or litellm")
    if provider is None:  # forced native, or a bare model name at an api_base
        provider = Provider("openai-compatible", (), None, None)
        bare = model  # an unknown prefix may be part of the server's own model name
    base = _base(provider, api_base)
    if not base:
        raise ValueError(
            f"model {model!r} speaks OpenAI's wire at an address of its own: set api_base "
            f"(e.g. http://127.0.0.1:8000/v1) or choose transport: litellm"
        )
    return Wire("openai", provider.name, base, bare, api_key_env or provider.key_env, provider.auth_header)
