"""The published OpenAPI schema, fuzzed against a running gateway with keys configured (schemathesis).

Every operation gets generated requests, valid and not; every response must be no 5xx, a documented
status, the documented content type and the documented body (errors in OpenAI's shape, 422 included).
A bounded number of examples here; ``bench/fuzz.py`` runs longer.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hybridgate.testing.fuzzing import ADMIN, MODELS, fuzz_config
from tests.conftest import ServerThread

EXAMPLES = 25
# Every check schemathesis has, except those that flag answers the schema documents, each for its reason:
EXCLUDED = {
    # "Schema-valid data must get 2xx": the gateway answers a schema-valid body with a documented refusal when
    # its rules say so: 400 when max_tokens is above the key's cap (this fixture caps it at 4, so most generated
    # bodies), a prompt is over the local context or a schema the local grammar cannot hold; 403 when privacy
    # keeps it off the cloud, 429 when the key's budget is spent, 503 when no backend is healthy or the queue is
    # full. Each is documented on the operation; every other check (no 5xx, documented status, content type,
    # body schema, headers, invalid data refused, auth) runs.
    "positive_data_acceptance": positive_data_acceptance,
}


@pytest.fixture(scope="module")
def fuzzed(local_model, query_embedder, tmp_path_factory) -> ServerThread:  # type: ignore[no-untyped-def]
    from hybridgate.serving.app import create_app
    from hybridgate.serving.build import build_gateway
    from hybridgate.testing.stub_upstream import create_stub_app

    stub = ServerThread(create_stub_app()).__enter__()
    cfg = fuzz_config(stub.url)
    gateway = build_gateway(cfg, local=local_model, embedder=query_embedder)
    srv = ServerThread(create_app(cfg, lambda: gateway)).__enter__()
    yield srv
    srv.__exit__(None, None, None)
    stub.__exit__(None, None, None)


def test_the_schema_declares_errors_and_the_bearer_scheme(fuzzed: ServerThread) -> None:
    spec = httpx.get(f"{fuzzed.url}/openapi.json", headers=ADMIN).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "422", "429", "503"} <= set(chat)
    assert chat["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_operation_survives_generated_requests(fuzzed: ServerThread) -> None:
    spec = httpx.get(f"{fuzzed.url}/openapi.json", headers=ADMIN).json()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 8
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and len(repr(case.body)) % 2 == 0:
                case.body["model"] = MODELS[len(repr(case.body)) % len(MODELS)]
            response = case.call(base_url=fuzzed.url, headers=ADMIN, timeout=60)
            statuses.setdefault(op.label, []).append(response.status_code)
            try:
                case.validate_response(response, excluded_checks=list(EXCLUDED.values()))
            except BaseException as exc:  # noqa: BLE001 - collect every operation's failures, then report them together
                failures.append(f"{op.label}: {str(exc)[:600]}")
                raise

        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - schemathesis reports a failure group
            if not any(f.startswith(op.label) for f in failures):
                failures.append(f"{op.label}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)
    assert all(statuses.get(op.label) for op in operations), statuses
    # The schema admits messages the gateway refuses (a tool message without its call id), so the bodies above
    # are mostly 4xx, and which of them pass depends on the draw. Generated text must also reach the router, the
    # local model and the cloud stub, and be answered in the documented shape: well-formed bodies around it.
    chat = next(op for op in operations if op.label == "POST /v1/chat/completions")
    answered: list[int] = []

    @given(text=st.text(max_size=400), model=st.sampled_from(MODELS), stream=st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def generated_text(text: str, model: str, stream: bool) -> None:
        case = chat.Case(body={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4, "stream": stream})
        response = case.call(base_url=fuzzed.url, headers=ADMIN, timeout=60)
        answered.append(response.status_code)
        case.validate_response(response, excluded_checks=list(EXCLUDED.values()))

    generated_text()
    assert answered.count(200) >= EXAMPLES // 2, answered  # answered, not only refused (privacy may refuse a few)
