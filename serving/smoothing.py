"""One exponential moving average for every running figure the gateway keeps (latency, round trip, decode speed,
joules per token), so they all treat their first sample the same way: it is the average."""

from __future__ import annotations


def smoothed(average: float | None, sample: float, alpha: float) -> float:
    """The average after ``sample``; ``average`` is None before the first one."""
    return sample if average is None else (1.0 - alpha) * average + alpha * sample
