"""The routing policy: pure decisions, no network and no disk.

The gateway (``hybridgate.serving``) hands the router a description of the
query and of the backends it has; the router answers with a :class:`Decision`.
Keeping it pure means every decision can be replayed in a test or a benchmark.
"""

from hybridgate.router.decision import Decision, Mode, Route, RouteContext, RouteQuery, Signal
from hybridgate.router.policy import (
    BudgetExhausted,
    EnergyBudgetExhausted,
    EnergyCapExceeded,
    PrivacyViolation,
    RoutingPolicy,
    ToolsRefused,
    UnroutableError,
)
from hybridgate.router.privacy import PersonalDataDetector
from hybridgate.router.rule_scorer import RuleScorer
from hybridgate.router.scorer import EmbeddingScorer, Scorer
from hybridgate.router.snapshot import RoutingSnapshot

__all__ = [
    "BudgetExhausted",
    "Decision",
    "EnergyBudgetExhausted",
    "EmbeddingScorer",
    "EnergyCapExceeded",
    "Mode",
    "PersonalDataDetector",
    "PrivacyViolation",
    "Route",
    "RouteContext",
    "RouteQuery",
    "RoutingPolicy",
    "RoutingSnapshot",
    "RuleScorer",
    "Scorer",
    "Signal",
    "ToolsRefused",
    "UnroutableError",
]
