"""The operator's API: health, metrics, the decision log, the device's labels and node weights, the schema."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.errors import ApiError
from hybridgate.serving.gateway import Gateway
from hybridgate.serving.routes_common import error_responses, gateway_of, is_loopback
from hybridgate.serving.state.base import key_id

log = logging.getLogger(__name__)


def published_schema(app: FastAPI, keys_enabled: bool) -> dict[str, Any]:
    """FastAPI's schema, plus the bearer-key scheme when keys are configured (/healthz stays open)."""
    if app.openapi_schema is None:
        schema = app.openapi()
        if keys_enabled:
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            schema["paths"].get("/healthz", {}).get("get", {})["security"] = []
        for path in schema["paths"].values():  # FastAPI's own 422 (HTTPValidationError) is not what we send
            for op in path.values():
                if "422" in op.get("responses", {}):
                    op["responses"]["422"]["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def operator_router(keys: KeyCheck) -> APIRouter:
    """Routes behind ``keys.operator`` (an admin key where admin keys are set), except /healthz, which stays
    open, the decision log, which a tenant reads for its own key, and what only this device may read."""
    operator = keys.operator
    api = APIRouter()

    def device_only(request: Request, api_key: str | None, what: str) -> None:
        if keys.is_admin(api_key):
            return
        host = request.client.host if request.client else ""
        forwarded = any(h in request.headers for h in ("forwarded", "x-forwarded-for", "x-real-ip"))
        if not is_loopback(host) or forwarded:
            raise ApiError(
                403, f"{what} are served to this device only (loopback, not through a proxy), or to an admin key",
                type="permission_error", code="loopback_only",
            )

    @api.get("/v1/hybridgate/decisions", responses=error_responses(400, 401, 422))
    async def decisions(
        limit: int = Query(100, ge=1, le=10_000), gateway: Gateway = Depends(gateway_of), api_key: str | None = Depends(keys)
    ) -> dict[str, Any]:
        """The newest decisions: a tenant sees its own, an admin key (or an open gateway) every one."""
        recent = await gateway.state.recent_decisions(limit if keys.is_admin(api_key) or not keys.enabled else 10_000)
        if keys.enabled and not keys.is_admin(api_key):
            mine = key_id(api_key)
            recent = [d for d in recent if d.get("key") == mine][:limit]
        return {"object": "list", "data": recent}

    @api.get("/v1/hybridgate/labels", responses=error_responses(400, 401, 403, 422))
    async def labels(
        request: Request,
        limit: int = Query(1000, ge=1, le=100_000),
        gateway: Gateway = Depends(gateway_of),
        api_key: str | None = Depends(operator),
    ) -> dict[str, Any]:
        """This device's labelled query vectors, for the federated client on the same device.

        With admin keys configured, an admin key is what counts. Without, only a direct loopback caller: a
        request that came through a proxy (forwarding headers) could be anyone's, whatever its peer address."""
        device_only(request, api_key, "labels")
        return {"object": "list", "data": await gateway.state.labels(limit)}

    @api.get("/v1/hybridgate/nodes", responses=error_responses(401, 403))
    async def nodes(request: Request, gateway: Gateway = Depends(gateway_of), api_key: str | None = Depends(operator)) -> dict[str, Any]:
        """The node choice: the weights learnt on this gateway, and each node's load, speed and round trip. The
        federated client on the same device reads its weights here (same rule as the labels)."""
        device_only(request, api_key, "node weights")
        return {"object": "hybridgate.nodes", **gateway.describe_nodes()}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request, _: str | None = Depends(operator)) -> JSONResponse:
        return JSONResponse(published_schema(request.app, keys.enabled))

    @api.get("/docs", include_in_schema=False)
    async def docs(_: str | None = Depends(operator)) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="hybridgate")

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", responses={**error_responses(401, 403), 503: {"description": "models still loading"}})
    async def readyz(gateway: Gateway = Depends(gateway_of), _: str | None = Depends(operator)) -> JSONResponse:
        try:
            await gateway.state.ping()
        except Exception as exc:  # a store that cannot even fall back is a real outage
            log.warning("state ping failed: %s", exc)
        state = gateway.state.describe()
        backends = gateway.describe()
        ready = bool(backends[gateway.local.name]["loaded"])
        body = {
            "status": "ready" if ready else "loading",
            "degraded": bool(state.get("degraded")),
            "router": gateway.router_info(),
            "backends": backends,
            "state": state,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get(
        "/metrics",
        response_class=Response,
        responses={
            **error_responses(401, 403),
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        },
    )
    async def metrics(gateway: Gateway = Depends(gateway_of), _: str | None = Depends(operator)) -> Response:
        m = gateway.metrics
        m.queue_depth.labels(gateway.local.name).set(gateway.local.queue_depth)
        m.state_degraded.set(1 if gateway.state.describe().get("degraded") else 0)
        info = gateway.router_info()
        m.router_info.clear()
        m.router_info.labels(str(info["name"]), str(info["version"])).set(1)
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return api
