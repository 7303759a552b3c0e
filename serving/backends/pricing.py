"""What a remote answer cost, for spend counters and daily budgets."""

from __future__ import annotations

import importlib.util
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from hybridgate.serving.backends.base import Usage
from hybridgate.serving.config import RemoteConfig

log = logging.getLogger(__name__)
_PRICE_FILE = "model_prices_and_context_window_backup.json"


@lru_cache(maxsize=1)
def _price_list() -> dict[str, Any]:
    """litellm's list price file, read as data: importing litellm itself costs seconds and ~100 MB, and a
    gateway on the native transport has no other use for it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _PRICE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("no price list at %s: remote answers are not charged unless the config gives prices", path)
        return {}
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=64)
def list_price_per_1k(model: str) -> tuple[float, float] | None:
    """USD per 1,000 prompt and completion tokens, looked up as litellm does: the model string, then the name
    after its provider prefix (``openai/gpt-4o-mini`` is listed as ``gpt-4o-mini``)."""
    prices = _price_list()
    for key in (model, model.partition("/")[2]):
        entry = prices.get(key) if key else None
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            try:
                return float(entry["input_cost_per_token"]) * 1000, float(entry.get("output_cost_per_token", 0.0)) * 1000
            except (TypeError, ValueError):
                return None
    log.debug("no list price for %s", model)
    return None


def prices_per_1k(cfg: RemoteConfig) -> tuple[float, float] | None:
    """Configured prices win; otherwise the list price; None: nothing is charged (a self-hosted model)."""
    if cfg.cost_per_1k_prompt_usd is not None or cfg.cost_per_1k_completion_usd is not None:
        return cfg.cost_per_1k_prompt_usd or 0.0, cfg.cost_per_1k_completion_usd or 0.0
    return list_price_per_1k(cfg.model)


def cost_usd(cfg: RemoteConfig, usage: Usage) -> float:
    per_1k = prices_per_1k(cfg)
    if per_1k is None:
        return 0.0
    return usage.prompt_tokens / 1000 * per_1k[0] + usage.completion_tokens / 1000 * per_1k[1]
