"""The schema fuzzer's gateway, shared by tests/test_fuzz_schema.py (a few examples) and bench/fuzz.py (many)."""

from __future__ import annotations

from hybridgate.serving.config import GatewayConfig
from hybridgate.testing.server import gateway_config

# Random model names are all 404s; half the generated chat bodies get a real one, so the routing, the local
# model and the cloud stub see generated input too.
MODELS = ["hybridgate/auto", "hybridgate/local", "hybridgate/cloud", "hybridgate/redact"]
ADMIN = {"Authorization": "Bearer root"}


def fuzz_config(stub_url: str) -> GatewayConfig:
    """Keys configured (a tenant and the admin of ``ADMIN``), answers capped at 4 tokens to keep runs short."""
    return gateway_config(stub_url, server={"api_keys": ["tenant"], "admin_keys": ["root"]}, budgets={"max_tokens": 4})
