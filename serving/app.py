"""The OpenAI-compatible HTTP surface of the gateway."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hybridgate import __version__
from hybridgate.router import (
    BudgetExhausted,
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    PrivacyViolation,
    ToolsRefused,
    UnroutableError,
)
from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.backends.base import (
    BackendError,
    BackendTimeout,
    PromptTooLong,
    QueueFull,
    UpstreamRejected,
    Usage,
)
from hybridgate.serving.body_limit import BodyLimit
from hybridgate.serving.cloud_request import request_params
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.errors import ApiError, install_error_handlers
from hybridgate.serving.gateway import ALIASES, Gateway, RequestHints
from hybridgate.serving.responses import completion_body, sse_events
from hybridgate.serving.schemas import ChatCompletionRequest, ErrorResponse, FeedbackRequest, UnsupportedField
from hybridgate.serving.state.base import key_id
from hybridgate.serving.structured import StructuredOutputError
from hybridgate.serving.ui import Dashboard

log = logging.getLogger(__name__)


def to_api_error(exc: Exception) -> ApiError:
    """Backend and routing failures as the status a client can act on."""
    if isinstance(exc, QueueFull):
        return ApiError(
            503, str(exc), type="server_busy", code="queue_full", headers={"Retry-After": str(exc.retry_after_s)}
        )
    if isinstance(exc, PromptTooLong):
        # 400 with OpenAI's own code, as OpenAI answers it: client libraries map it to their context-window error.
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, BudgetExhausted):
        return ApiError(429, str(exc), type="insufficient_quota", code="budget_exhausted", headers={"Retry-After": "3600"})
    if isinstance(exc, EnergyBudgetExhausted):
        return ApiError(429, str(exc), type="insufficient_quota", code="energy_budget_exhausted", headers={"Retry-After": "3600"})
    if isinstance(exc, EnergyCapExceeded):
        return ApiError(400, str(exc), code="energy_cap_exceeded", param="max_tokens")
    if isinstance(exc, PrivacyViolation):
        # OpenAI's SDK (and LangChain through it) maps the status to PermissionDeniedError. litellm maps no 403 from
        # an OpenAI-compatible server: it raises APIError with status_code 403, or, where the SDK's message carries
        # the body (openai < 3), reads the type: invalid_request_error makes it a BadRequestError with the reason.
        return ApiError(403, str(exc), type="invalid_request_error", code="privacy_strict", param="model")
    if isinstance(exc, UnroutableError):
        return ApiError(503, str(exc), type="server_busy", code="no_healthy_backend", headers={"Retry-After": "5"})
    if isinstance(exc, UpstreamRejected):
        return ApiError(400, str(exc), code=exc.code)
    if isinstance(exc, ToolsRefused):
        return ApiError(400, str(exc), code="tools_not_allowed", param="tools")
    if isinstance(exc, StructuredOutputError):
        return ApiError(400, str(exc), code="unsupported_schema", param="response_format")
    if isinstance(exc, BackendTimeout):
        return ApiError(504, str(exc), type="api_error", code=exc.code)
    if isinstance(exc, BackendError):
        return ApiError(502, str(exc), type="api_error", code=exc.code)
    raise exc


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def request_hints(request: Request) -> RequestHints:
    """``x-hybridgate-privacy: strict`` and ``x-hybridgate-deadline-ms: 200``; anything else there is a 400."""
    # A header given twice (or as a comma list) could be read differently by a proxy in front: every value counts,
    # and the most restrictive wins, so "default" then "strict" is strict.
    values = [v.strip().lower() for raw in request.headers.getlist("x-hybridgate-privacy") for v in raw.split(",")]
    for privacy in values:
        if privacy not in ("", "strict", "default"):
            raise ApiError(400, f"x-hybridgate-privacy must be strict or default, not {privacy!r}", param="x-hybridgate-privacy")
    privacy = "strict" if "strict" in values else "default"
    raw = request.headers.get("x-hybridgate-deadline-ms")
    deadline: float | None = None
    if raw is not None:
        try:
            deadline = float(raw)
        except ValueError:
            deadline = -1.0
        if not 0 < deadline < 3_600_000:
            raise ApiError(400, f"x-hybridgate-deadline-ms must be a positive number of milliseconds, not {raw!r}", param="x-hybridgate-deadline-ms")
    return RequestHints(privacy_strict=privacy == "strict", deadline_ms=deadline)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses an endpoint answers, each in OpenAI's shape: so the schema says what the API does."""
    what = {
        400: "malformed JSON, an unsupported field or value, a bad header or parameter, a prompt the local model cannot hold (context_length_exceeded), an answer expected to use more energy than the key's cap (energy_cap_exceeded)",
        401: "a key is configured and none, or a wrong one, was sent",
        403: "privacy forbids the cloud for this request, or the endpoint needs an admin key",
        404: "unknown model, or no answer with this id awaits a rating",
        413: "the body is over server.max_body_bytes",
        422: "the body does not match the schema",
        429: "this key's daily cloud budget (budget_exhausted) or energy budget (energy_budget_exhausted) is spent",
        502: "the backend failed and no fallback was allowed",
        503: "the local queue is full or no backend is healthy (Retry-After says when to come back)",
        504: "the backend timed out and no fallback was allowed",
    }
    return {code: {"model": ErrorResponse, "description": what[code]} for code in statuses}


CHAT_ERRORS = _errors(400, 401, 403, 404, 413, 422, 429, 502, 503, 504)


def create_app(cfg: GatewayConfig, gateway_factory: Callable[[], Gateway]) -> FastAPI:
    """``gateway_factory`` runs at start-up, so the model loads once the server is about to listen."""
    keys = KeyCheck(cfg.server.api_keys, cfg.server.admin_keys)
    operator = keys.operator
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

    # The schema and its page are served by the routes below, behind the operator's key when keys are configured.
    app = FastAPI(title="hybridgate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=cfg.server.max_body_bytes)
    install_error_handlers(app)
    dashboard.mount(app)
    app.state.dashboard = dashboard

    async def gw(request: Request) -> Gateway:  # a coroutine: FastAPI would run a plain function in a thread
        return request.app.state.gateway  # type: ignore[no-any-return]

    def checked(body: ChatCompletionRequest, gateway: Gateway) -> None:
        try:
            body.check_supported()
        except UnsupportedField as exc:
            raise ApiError(400, str(exc), code="unsupported_parameter", param=exc.field) from None
        if not gateway.known_model(body.model):
            raise ApiError(404, f"the model '{body.model}' does not exist on this gateway", type="not_found_error", code="model_not_found", param="model")

    @app.post("/v1/route", responses=_errors(400, 401, 403, 404, 413, 422, 429, 503))
    async def route(
        body: ChatCompletionRequest, request: Request, gateway: Gateway = Depends(gw), api_key: str | None = Depends(keys)
    ) -> dict[str, Any]:
        """The decision for this request, without generating anything: a dry run."""
        checked(body, gateway)
        try:
            decision, ms, prompt_tokens = await gateway.decide(body, body.plain_messages(), api_key, request_hints(request))
        except Exception as exc:
            raise to_api_error(exc) from None
        return {"object": "hybridgate.route", "decision_ms": round(ms, 3), "prompt_tokens": prompt_tokens, **decision.as_dict()}

    @app.post("/v1/feedback", responses=_errors(400, 401, 404, 413, 422))
    async def feedback(body: FeedbackRequest, gateway: Gateway = Depends(gw), api_key: str | None = Depends(keys)) -> dict[str, Any]:
        """Rate one answer by its id; the rating becomes a training label kept on this device."""
        result = await gateway.feedback(body.id, body.score(), api_key)
        if result is None:
            raise ApiError(
                404,
                f"no answer {body.id!r} awaits a rating: unknown, already rated, older than state.label_hold_s, or not scored by the router",
                type="not_found_error",
                code="answer_not_found",
                param="id",
            )
        return result

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={
            200: {
                "description": "chat.completion, or with stream: true chat.completion.chunk events",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    # one schema per server-sent event: a data line (a JSON chunk, or [DONE])
                    "text/event-stream": {"schema": {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}},
                },
            },
            **CHAT_ERRORS,
        },
    )
    async def chat_completions(
        body: ChatCompletionRequest, request: Request, gateway: Gateway = Depends(gw), api_key: str | None = Depends(keys)
    ) -> Response:
        checked(body, gateway)
        hints = request_hints(request)
        messages = body.plain_messages()
        cap = cfg.budgets.max_tokens_for(api_key or "")
        if cap is not None and body.answer_limit is not None and body.answer_limit > cap:
            raise ApiError(400, f"max_tokens {body.answer_limit} is above this key's cap of {cap}", code="max_tokens_exceeded", param="max_tokens")
        params = request_params(body, body.answer_limit if cap is None else min(body.answer_limit or cap, cap), messages)
        try:
            decision, ms, prompt_tokens = await gateway.decide(body, messages, api_key, hints, params)
            if not body.stream:
                answer = await gateway.chat(body, params, decision, ms, api_key, prompt_tokens)
                return JSONResponse(completion_body(answer.completion, answer.routing), headers=answer.routing.headers())
            stream = await gateway.stream(params, decision, ms, api_key, prompt_tokens)
        except ApiError:
            raise
        except Exception as exc:
            err = to_api_error(exc)
            if not isinstance(exc, BackendError):  # refused before generating (a failed backend counts as an error)
                gateway.metrics.rejections.labels(err.code or err.type).inc()
            raise err from None

        async def finish(usage: Usage, status: str) -> None:
            await gateway.finish_stream(stream, usage, api_key, status)

        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = sse_events(
            stream,
            model=gateway.backends[stream.routing.backend].model_id,
            include_usage=include_usage,
            prompt_tokens_estimate=prompt_tokens,
            finish=finish,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers={**stream.routing.headers(), "Cache-Control": "no-cache"})

    @app.get("/v1/models", responses=_errors(401))
    async def models(gateway: Gateway = Depends(gw), _: str | None = Depends(keys)) -> dict[str, Any]:
        data = [{"id": alias, "object": "model", "created": 0, "owned_by": "hybridgate"} for alias in ALIASES]
        for name, b in gateway.backends.items():
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "hybridgate", "route": b.route.value, "model": b.model_id})
        return {"object": "list", "data": data}

    @app.get("/v1/hybridgate/decisions", responses=_errors(400, 401, 422))
    async def decisions(
        limit: int = Query(100, ge=1, le=10_000), gateway: Gateway = Depends(gw), api_key: str | None = Depends(keys)
    ) -> dict[str, Any]:
        """The newest decisions: a tenant sees its own, an admin key (or an open gateway) every one."""
        recent = await gateway.state.recent_decisions(limit if keys.is_admin(api_key) or not keys.enabled else 10_000)
        if keys.enabled and not keys.is_admin(api_key):
            mine = key_id(api_key)
            recent = [d for d in recent if d.get("key") == mine][:limit]
        return {"object": "list", "data": recent}

    @app.get("/v1/hybridgate/labels", responses=_errors(400, 401, 403, 422))
    async def labels(
        request: Request, limit: int = Query(1000, ge=1, le=100_000), gateway: Gateway = Depends(gw), api_key: str | None = Depends(operator)
    ) -> dict[str, Any]:
        """This device's labelled query vectors, for the federated client on the same device.

        With admin keys configured, an admin key is what counts. Without, only a direct loopback caller: a
        request that came through a proxy (forwarding headers) could be anyone's, whatever its peer address."""
        device_only(request, api_key, "labels")
        return {"object": "list", "data": await gateway.state.labels(limit)}

    @app.get("/v1/hybridgate/nodes", responses=_errors(401, 403))
    async def nodes(request: Request, gateway: Gateway = Depends(gw), api_key: str | None = Depends(operator)) -> dict[str, Any]:
        """The node choice: the weights learnt on this gateway, and each node's load, speed and round trip. The
        federated client on the same device reads its weights here (same rule as the labels)."""
        device_only(request, api_key, "node weights")
        return {"object": "hybridgate.nodes", **gateway.describe_nodes()}

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

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: str | None = Depends(operator)) -> JSONResponse:
        return JSONResponse(_schema())

    def _schema() -> dict[str, Any]:
        """FastAPI's schema, plus the bearer-key scheme when keys are configured (/healthz stays open)."""
        if app.openapi_schema is None:
            schema = app.openapi()
            if keys.enabled:
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

    @app.get("/docs", include_in_schema=False)
    async def docs(_: str | None = Depends(operator)) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="hybridgate")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={**_errors(401, 403), 503: {"description": "models still loading"}})
    async def readyz(gateway: Gateway = Depends(gw), _: str | None = Depends(operator)) -> JSONResponse:
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

    @app.get(
        "/metrics",
        response_class=Response,
        responses={**_errors(401, 403), 200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
    )
    async def metrics(gateway: Gateway = Depends(gw), _: str | None = Depends(operator)) -> Response:
        m = gateway.metrics
        m.queue_depth.labels(gateway.local.name).set(gateway.local.queue_depth)
        m.state_degraded.set(1 if gateway.state.describe().get("degraded") else 0)
        info = gateway.router_info()
        m.router_info.clear()
        m.router_info.labels(str(info["name"]), str(info["version"])).set(1)
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
