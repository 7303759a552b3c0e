"""Every row of the error table (serving/errors.py), in-process: the exception a part of the gateway raises, and
the status, OpenAI-shaped body and headers the client gets for it. The expectations are written out here, not
read from the table, so a changed row fails until this file says the new answer is meant."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from hybridgate.router import (
    BudgetExhausted,
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    PrivacyViolation,
    ToolsRefused,
    UnroutableError,
)
from hybridgate.serving.app import create_app
from hybridgate.serving.backends.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    PromptTooLong,
    QueueFull,
    RequestUnsendable,
    UpstreamRejected,
)
from hybridgate.serving.config import load_config
from hybridgate.serving.errors import ERROR_TABLE, ApiError, api_error_for, install_error_handlers, to_api_error
from hybridgate.serving.structured import StructuredOutputError

# exception -> (status, type, code, param, Retry-After)
EXPECTED: dict[type[Exception], tuple[Exception, int, str, str | None, str | None, str | None]] = {
    QueueFull: (QueueFull("local", 7), 503, "server_busy", "queue_full", None, "7"),
    PromptTooLong: (PromptTooLong("local", 2000, 1000), 400, "invalid_request_error", "context_length_exceeded", "messages", None),
    BudgetExhausted: (BudgetExhausted("spent"), 429, "insufficient_quota", "budget_exhausted", None, "3600"),
    EnergyBudgetExhausted: (EnergyBudgetExhausted("spent"), 429, "insufficient_quota", "energy_budget_exhausted", None, "3600"),
    EnergyCapExceeded: (EnergyCapExceeded("too much"), 400, "invalid_request_error", "energy_cap_exceeded", "max_tokens", None),
    PrivacyViolation: (PrivacyViolation("private"), 403, "invalid_request_error", "privacy_strict", "model", None),
    UnroutableError: (UnroutableError("none healthy"), 503, "server_busy", "no_healthy_backend", None, "5"),
    UpstreamRejected: (UpstreamRejected("refused", backend="cloud"), 400, "invalid_request_error", "upstream_rejected", None, None),
    ToolsRefused: (ToolsRefused("no tools"), 400, "invalid_request_error", "tools_not_allowed", "tools", None),
    StructuredOutputError: (StructuredOutputError("bad schema"), 400, "invalid_request_error", "unsupported_schema", "response_format", None),
    BackendTimeout: (BackendTimeout("slow", backend="cloud"), 504, "api_error", "backend_timeout", None, None),
    BackendError: (BackendError("failed", backend="cloud"), 502, "api_error", "backend_error", None, None),
}
# Subclasses without a row of their own answer as their nearest parent with one (their own code, where they have one).
SUBCLASSES = [
    (RequestUnsendable("cannot encode", backend="cloud"), 400, "invalid_request_error", "invalid_request_content"),
    (BackendUnavailable("refused", backend="cloud"), 502, "api_error", "backend_unavailable"),
]


def test_every_row_of_the_table_is_checked_here() -> None:
    assert set(EXPECTED) == set(ERROR_TABLE)


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    raised: dict[str, Exception] = {}

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise raised[name]

    app.state.raised = raised
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app(), raise_server_exceptions=False)


def _served(client: TestClient, exc: Exception) -> Any:
    client.app.state.raised[type(exc).__name__] = exc  # type: ignore[attr-defined]
    return client.get(f"/raise/{type(exc).__name__}")


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_failure_answers_its_status_body_and_headers(client: TestClient, cls: type[Exception]) -> None:
    exc, status, kind, code, param, retry_after = EXPECTED[cls]
    r = _served(client, exc)
    assert r.status_code == status
    assert r.json() == {"error": {"message": str(exc), "type": kind, "code": code, "param": param}}
    assert r.headers.get("retry-after") == retry_after
    assert r.headers["content-type"] == "application/json"
    # The same answer from the function the routes use (and tests import), without HTTP.
    err = to_api_error(exc)
    assert (err.status, err.type, err.code, err.param, err.headers.get("Retry-After")) == (status, kind, code, param, retry_after)


@pytest.mark.parametrize("exc,status,kind,code", SUBCLASSES, ids=[type(row[0]).__name__ for row in SUBCLASSES])
def test_a_subclass_answers_as_its_nearest_parent_in_the_table(client: TestClient, exc: Exception, status: int, kind: str, code: str) -> None:
    r = _served(client, exc)
    assert r.status_code == status and r.json()["error"]["type"] == kind and r.json()["error"]["code"] == code


def test_a_failure_outside_the_table_is_a_500_without_its_details(client: TestClient) -> None:
    exc = RuntimeError("secret detail of a bug")
    assert api_error_for(exc) is None
    with pytest.raises(RuntimeError):
        to_api_error(exc)
    r = _served(client, exc)
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"] == {"message": "internal error in the gateway; see its log", "type": "api_error", "code": "internal", "param": None}


def test_an_api_error_is_answered_as_raised(client: TestClient) -> None:
    r = _served(client, ApiError(418, "short and stout", type="teapot", code="brew", param="p", headers={"X-Why": "tea"}))
    assert r.status_code == 418 and r.headers["x-why"] == "tea"
    assert r.json() == {"error": {"message": "short and stout", "type": "teapot", "code": "brew", "param": "p"}}


def test_the_gateway_app_installs_every_row() -> None:
    cfg = load_config(None, {"cloud": None, "standin": {"enabled": False}})
    app = create_app(cfg, lambda: None)  # type: ignore[arg-type, return-value]  # never started: no gateway needed
    assert set(ERROR_TABLE) <= set(app.exception_handlers)
