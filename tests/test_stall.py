"""One hostile request must not stall the gateway: the worst inputs for each scan, while /healthz keeps answering.

Before, an e-mail pattern that backtracked quadratically kept the event loop busy for minutes on one
600 KB message (/healthz timed out after 117 s); tokenising, rendering and scanning ran on the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tests.conftest import ServerThread

WORST = [
    "@ " + "a." * 300_000,  # the e-mail pattern's worst case
    "x@" + "a" * 600_000,
    "4111 " * 120_000,  # long runs of digits and separators: card, IBAN and phone scans
    "(" * 500_000,
    "word " * 120_000,  # tokeniser and template on a long prompt
]


def test_healthz_answers_while_the_worst_inputs_are_scanned(make_gateway: Callable[..., ServerThread]) -> None:
    gw = make_gateway(server={"max_body_bytes": 2_000_000}, privacy={"names": ["Ada Lovelace"]})
    statuses: list[int] = []

    def hostile(text: str) -> None:
        body = {"model": "hybridgate/auto", "messages": [{"role": "user", "content": text}]}
        statuses.append(httpx.post(f"{gw.url}/v1/route", json=body, timeout=120).status_code)

    workers = [threading.Thread(target=hostile, args=(t,)) for t in WORST]
    for w in workers:
        w.start()
    slowest = 0.0
    with httpx.Client(timeout=10) as c:
        while any(w.is_alive() for w in workers):
            t0 = time.perf_counter()
            assert c.get(f"{gw.url}/healthz").status_code == 200
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.02)
    for w in workers:
        w.join()
    assert len(statuses) == len(WORST) and all(s < 500 for s in statuses), statuses
    print(f"slowest healthz {slowest * 1000:.0f} ms")
    assert slowest < 0.1, f"/healthz took {slowest * 1000:.0f} ms while hostile requests were scanned"
