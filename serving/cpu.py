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


def one_blas_thread() -> None:
    """Run numpy's BLAS on one thread in a serving process (called by ``hybridgate serve`` and each worker).

    The router's products are small (one query against 1,413 remembered ones: a 1x384 by 384x1413 product), and
    OpenBLAS's worker threads cost more to wake and join than the product itself: on 2 loaded cores the default
    router's score took 8.6 ms with OpenBLAS's threads and 1.3 ms with one (measured in one process, 50 scores
    each). The requests are the parallelism of a gateway; a score needs no more than the thread it runs on.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
