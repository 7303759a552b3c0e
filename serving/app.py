"""The OpenAI-compatible HTTP surface of the gateway: the app, its lifespan, and the routers it is made of.

The routes live in two routers, the OpenAI API (serving/routes_openai.py) and the operator's
(serving/routes_operator.py), next to the dashboard's; a failure becomes an answer through the error table
(serving/errors.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hybridgate import __version__
from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.body_limit import BodyLimit
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.errors import install_error_handlers, to_api_error
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.routes_common import is_loopback
from hybridgate.serving.routes_openai import openai_router
from hybridgate.serving.routes_operator import operator_router
from hybridgate.serving.ui import Dashboard

# Imported from here by the CLI and the dashboard (is_loopback) and by tests (to_api_error).
__all__ = ["create_app", "is_loopback", "to_api_error"]


def create_app(cfg: GatewayConfig, gateway_factory: Callable[[], Gateway]) -> FastAPI:
    """``gateway_factory`` runs at start-up, so the model loads once the server is about to listen."""
    keys = KeyCheck(cfg.server.api_keys, cfg.server.admin_keys)
    dashboard = Dashboard(cfg, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = gateway_factory()
        app.state.gateway.start()
        dashboard.start(app.state.gateway)
        try:
            yield
        finally:
            await dashboard.aclose()
            await app.state.gateway.aclose()

    # The schema and its page are served by the operator's routes, behind its key when keys are configured.
    app = FastAPI(title="hybridgate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=cfg.server.max_body_bytes)
    install_error_handlers(app)
    dashboard.mount(app)
    app.state.dashboard = dashboard
    app.include_router(openai_router(cfg, keys))
    app.include_router(operator_router(keys))
    return app
