"""The one thread the gateway's CPU work runs on, off the event loop.

Deciding (rendering, tokenising, scanning, embedding) and preparing a local generation (template, tokens,
grammar) are pure CPU and mostly Python: two such threads at once compete with the event loop for the
interpreter lock, and on a loaded machine /healthz waited behind both. Queued on one thread, the loop
waits a switch interval at most. Shared by every gateway and local model in the process, never shut down.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

_CPU = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybridgate-cpu")


def cpu_executor() -> ThreadPoolExecutor:
    return _CPU
