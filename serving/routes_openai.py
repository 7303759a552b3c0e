"""The OpenAI-compatible API: chat completions, models, and hybridgate's dry run (/v1/route) and ratings."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hybridgate.serving.auth import KeyCheck
from hybridgate.serving.backends.base import BackendError, Usage
from hybridgate.serving.cloud_request import request_params
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.errors import ApiError, api_error_for
from hybridgate.serving.gateway import ALIASES, Gateway, RequestHints
from hybridgate.serving.responses import completion_body, sse_events
from hybridgate.serving.routes_common import error_responses, gateway_of
from hybridgate.serving.schemas import ChatCompletionRequest, FeedbackRequest, UnsupportedField

CHAT_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
# One schema per server-sent event: a data line (a JSON chunk, or [DONE]).
_SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "chat.completion, or with stream: true chat.completion.chunk events",
        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": _SSE_EVENT}},
    },
    **CHAT_ERRORS,
}


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


def checked(body: ChatCompletionRequest, gateway: Gateway) -> None:
    """A field the gateway does not support is a 400 and an unknown model a 404, before any work is done."""
    try:
        body.check_supported()
    except UnsupportedField as exc:
        raise ApiError(400, str(exc), code="unsupported_parameter", param=exc.field) from None
    if not gateway.known_model(body.model):
        raise ApiError(404, f"the model '{body.model}' does not exist on this gateway", type="not_found_error", code="model_not_found", param="model")


def openai_router(cfg: GatewayConfig, keys: KeyCheck) -> APIRouter:
    """The routes an OpenAI client calls. The gateway's failures become answers through the error table
    (serving/errors.py), installed on the app: a route lets them rise."""
    api = APIRouter()

    @api.post("/v1/route", responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503))
    async def route(
        body: ChatCompletionRequest, request: Request, gateway: Gateway = Depends(gateway_of), api_key: str | None = Depends(keys)
    ) -> dict[str, Any]:
        """The decision for this request, without generating anything: a dry run."""
        checked(body, gateway)
        decision, ms, prompt_tokens = await gateway.decide(body, body.plain_messages(), api_key, request_hints(request), count=True)
        return {"object": "hybridgate.route", "decision_ms": round(ms, 3), "prompt_tokens": prompt_tokens, **decision.as_dict()}

    @api.post("/v1/feedback", responses=error_responses(400, 401, 404, 413, 422))
    async def feedback(
        body: FeedbackRequest, gateway: Gateway = Depends(gateway_of), api_key: str | None = Depends(keys)
    ) -> dict[str, Any]:
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

    @api.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request, api_key: str | None = Depends(keys)) -> Response:
        gateway: Gateway = request.app.state.gateway  # read here: each dependency costs FastAPI a resolution step
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
        except Exception as exc:
            err = api_error_for(exc)
            if err is not None and not isinstance(exc, BackendError):  # refused before generating (a failed backend counts as an error)
                gateway.metrics.rejections.labels(err.code or err.type).inc()
            raise

        async def finish(usage: Usage, status: str) -> None:
            await gateway.finish_stream(stream, usage, api_key, status)

        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = sse_events(
            stream,
            model=gateway.backends[stream.routing.backend].model_id,
            include_usage=include_usage,
            # Counted only if the provider reports no usage, for a request whose decision did not count.
            prompt_tokens_estimate=prompt_tokens if prompt_tokens is not None else functools.partial(gateway.prompt_tokens, messages),
            finish=finish,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers={**stream.routing.headers(), "Cache-Control": "no-cache"})

    @api.get("/v1/models", responses=error_responses(401))
    async def models(gateway: Gateway = Depends(gateway_of), _: str | None = Depends(keys)) -> dict[str, Any]:
        data = [{"id": alias, "object": "model", "created": 0, "owned_by": "hybridgate"} for alias in ALIASES]
        for name, b in gateway.backends.items():
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "hybridgate", "route": b.route.value, "model": b.model_id})
        return {"object": "list", "data": data}

    return api
