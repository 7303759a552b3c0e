"""Fuzz the gateway's published OpenAPI schema for longer than the test suite does (schemathesis).

A gateway with keys and an admin key, the real local model and a loopback stub for the cloud; every
operation gets ``--examples`` generated requests (half the chat bodies with a real model name). Each
response is checked: no 5xx, a documented status, the documented content type and body. Prints a table
of statuses per operation and the failures, writes ``bench/results/fuzz.json``.

    python bench/fuzz.py [--examples 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=300, help="generated requests per operation")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    args = ap.parse_args()

    import httpx
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from rich.console import Console
    from rich.table import Table
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from hybridgate.classifiers.embedder import load_embedder
    from hybridgate.serving.app import create_app
    from hybridgate.serving.backends.local_llama import LlamaBackend
    from hybridgate.serving.build import build_gateway
    from hybridgate.testing.fuzzing import ADMIN, MODELS, fuzz_config
    from hybridgate.testing.server import ServerThread
    from hybridgate.testing.stub_upstream import create_stub_app

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    stub = ServerThread(create_stub_app()).__enter__()
    cfg = fuzz_config(stub.url)
    gateway = build_gateway(cfg, local=LlamaBackend("local", n_ctx=1024, n_threads=1, max_queue=4, default_max_tokens=4),
                            embedder=load_embedder("all-MiniLM-L6-v2-static"))
    srv = ServerThread(create_app(cfg, lambda: gateway)).__enter__()
    started = time.perf_counter()
    try:
        spec = httpx.get(f"{srv.url}/openapi.json", headers=ADMIN).json()
        schema = schemathesis.openapi.from_dict(spec)
        statuses: dict[str, Counter[int]] = {}
        failures: list[dict[str, str]] = []
        for result in schema.get_all_operations():
            op = result.ok()

            @given(case=op.as_strategy())
            @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case) -> None:  # type: ignore[no-untyped-def]
                if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and len(repr(case.body)) % 2 == 0:
                    case.body["model"] = MODELS[len(repr(case.body)) % len(MODELS)]
                response = case.call(base_url=srv.url, headers=ADMIN, timeout=120)
                statuses.setdefault(op.label, Counter())[response.status_code] += 1
                try:
                    case.validate_response(response, checks=checks)
                except BaseException as exc:  # noqa: BLE001
                    failures.append({"operation": op.label, "failure": str(exc)[:2000]})
                    raise

            try:
                run()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - a failure group recorded above, or a generation problem recorded here
                if not any(f["operation"] == op.label for f in failures):
                    failures.append({"operation": op.label, "failure": f"{type(exc).__name__}: {exc}"[:2000]})
    finally:
        srv.__exit__(None, None, None)
        stub.__exit__(None, None, None)
    wall = time.perf_counter() - started
    table = Table(title=f"schemathesis, up to {args.examples} generated requests per operation, {wall:.0f} s")
    for col in ("operation", "requests", "2xx", "4xx", "5xx", "failures"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    total5 = 0
    for label, counts in statuses.items():
        five = sum(v for k, v in counts.items() if k >= 500)
        total5 += five
        table.add_row(label, str(sum(counts.values())), str(sum(v for k, v in counts.items() if k < 300)),
                      str(sum(v for k, v in counts.items() if 400 <= k < 500)), str(five),
                      str(sum(1 for f in failures if f["operation"] == label)))
    Console(width=140).print(table)
    for f in failures:
        print(f"FAILED {f['operation']}: {f['failure'][:400]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"examples_per_operation": args.examples, "wall_s": round(wall, 1), "responses_5xx": total5,
                                    "statuses": {k: {str(c): n for c, n in v.items()} for k, v in statuses.items()},
                                    "failures": failures}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
