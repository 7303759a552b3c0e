"""Every failure leaves the gateway as OpenAI's error object, never as a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hybridgate.router import (
    BudgetExhausted,
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    PrivacyViolation,
    ToolsRefused,
    UnroutableError,
)
from hybridgate.serving.backends.base import BackendError, BackendTimeout, PromptTooLong, QueueFull, UpstreamRejected
from hybridgate.serving.structured import StructuredOutputError

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# Fields the schema restricts to what the gateway supports: a value outside is an unsupported feature (400, as
# for tools), not a malformed request (422).
_SCHEMA_UNSUPPORTED = {"n": "at most 8 choices a request"}

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# The gateway's own failures (routing, budgets, backends) as the status a client can act on. Looked up along the
# exception's class hierarchy, nearest class first, as Starlette looks up a handler: a subclass with no row of
# its own (RequestUnsendable) answers as its parent (UpstreamRejected), and a row for a subclass (BackendTimeout)
# wins over its parent's (BackendError).
ERROR_TABLE: dict[type[Exception], Callable[[Any], ApiError]] = {
    QueueFull: lambda e: ApiError(
        503, str(e), type="server_busy", code="queue_full", headers={"Retry-After": str(e.retry_after_s)}
    ),
    # 400 with OpenAI's own code, as OpenAI answers it: client libraries map it to their context-window error.
    PromptTooLong: lambda e: ApiError(400, str(e), code="context_length_exceeded", param="messages"),
    BudgetExhausted: lambda e: ApiError(
        429, str(e), type="insufficient_quota", code="budget_exhausted", headers={"Retry-After": "3600"}
    ),
    EnergyBudgetExhausted: lambda e: ApiError(
        429, str(e), type="insufficient_quota", code="energy_budget_exhausted", headers={"Retry-After": "3600"}
    ),
    EnergyCapExceeded: lambda e: ApiError(400, str(e), code="energy_cap_exceeded", param="max_tokens"),
    # OpenAI's SDK (and LangChain through it) maps the status to PermissionDeniedError. litellm maps no 403 from
    # an OpenAI-compatible server: it raises APIError with status_code 403, or, where the SDK's message carries
    # the body (openai < 3), reads the type: invalid_request_error makes it a BadRequestError with the reason.
    PrivacyViolation: lambda e: ApiError(403, str(e), type="invalid_request_error", code="privacy_strict", param="model"),
    UnroutableError: lambda e: ApiError(
        503, str(e), type="server_busy", code="no_healthy_backend", headers={"Retry-After": "5"}
    ),
    UpstreamRejected: lambda e: ApiError(400, str(e), code=e.code),
    ToolsRefused: lambda e: ApiError(400, str(e), code="tools_not_allowed", param="tools"),
    StructuredOutputError: lambda e: ApiError(400, str(e), code="unsupported_schema", param="response_format"),
    BackendTimeout: lambda e: ApiError(504, str(e), type="api_error", code=e.code),
    BackendError: lambda e: ApiError(502, str(e), type="api_error", code=e.code),
}


def api_error_for(exc: BaseException) -> ApiError | None:
    """The answer :data:`ERROR_TABLE` gives this exception, or None when it has no row (an unexpected failure)."""
    for cls in type(exc).__mro__:
        make = ERROR_TABLE.get(cls)
        if make is not None:
            return make(exc)
    return None


def to_api_error(exc: Exception) -> ApiError:
    """The table's answer, or ``exc`` raised again when it has none (it then reaches the 500 handler)."""
    err = api_error_for(exc)
    if err is None:
        raise exc
    return err


def install_error_handlers(app: FastAPI) -> None:
    async def _mapped(_: Request, exc: Exception) -> JSONResponse:
        err = api_error_for(exc)
        assert err is not None, "registered for ERROR_TABLE's classes only"
        return err.response()

    for cls in ERROR_TABLE:
        app.add_exception_handler(cls, _mapped)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        if first.get("type") == "json_invalid":
            return ApiError(400, "the request body is not valid JSON", code="invalid_json").response()
        if loc and loc[0] in _SCHEMA_UNSUPPORTED:
            why = _SCHEMA_UNSUPPORTED[loc[0]]
            return ApiError(400, f"'{loc[0]}' is not supported by this gateway ({why})", code="unsupported_parameter", param=loc[0]).response()
        msg = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return ApiError(422, msg, code="invalid_schema", param=where or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "api_error")
        return ApiError(exc.status_code, str(exc.detail), type=kind, headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return ApiError(500, "internal error in the gateway; see its log", type="api_error", code="internal").response()
