"""Where the gateway keeps what outlives a request: counters, the decision log, the cache."""

from hybridgate.serving.state.base import StateStore, UsageTotals
from hybridgate.serving.state.factory import open_state

__all__ = ["StateStore", "UsageTotals", "open_state"]
