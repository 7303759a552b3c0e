"""What a remote answer cost, for spend counters and daily budgets."""

from __future__ import annotations

import logging
from functools import lru_cache

from hybridgate.serving.backends.base import Usage
from hybridgate.serving.config import RemoteConfig

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def _litellm_prices(model: str) -> tuple[float, float] | None:
    try:
        import litellm

        p, c = litellm.cost_per_token(model=model, prompt_tokens=1000, completion_tokens=1000)
        return float(p), float(c)
    except Exception:  # an unknown or self-hosted model has no list price
        log.debug("no list price for %s", model)
        return None


def cost_usd(cfg: RemoteConfig, usage: Usage) -> float:
    """Configured prices win; otherwise litellm's price list; otherwise nothing is charged."""
    if cfg.cost_per_1k_prompt_usd is not None or cfg.cost_per_1k_completion_usd is not None:
        per_1k = (cfg.cost_per_1k_prompt_usd or 0.0, cfg.cost_per_1k_completion_usd or 0.0)
    else:
        prices = _litellm_prices(cfg.model)
        if prices is None:
            return 0.0
        per_1k = prices
    return usage.prompt_tokens / 1000 * per_1k[0] + usage.completion_tokens / 1000 * per_1k[1]
