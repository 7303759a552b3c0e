"""Pick the store the configuration asks for."""

from __future__ import annotations

from hybridgate.serving.config import StateConfig
from hybridgate.serving.state.base import StateStore
from hybridgate.serving.state.memory import MemoryStore


def open_state(cfg: StateConfig) -> StateStore:
    memory = MemoryStore(decision_log_size=cfg.decision_log_size, label_store_size=cfg.label_store_size)
    if not cfg.redis_url:
        return memory
    from hybridgate.serving.state.redis_store import RedisStore
    from hybridgate.serving.state.resilient import ResilientStore

    shared = RedisStore(
        cfg.redis_url,
        cfg.decision_log_size,
        label_store_size=cfg.label_store_size,
        reservation_ttl_s=cfg.reservation_ttl_s,
        replica_id=cfg.replica_id,
    )
    return ResilientStore(shared, memory, cfg.reconnect_interval_s)
