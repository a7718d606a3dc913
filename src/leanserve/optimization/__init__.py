"""Make models lean: variants, an accuracy guard, measurement, and an honest report.

``optimize(model, data=..., metric=..., budget=..., repo=..., name=...)`` builds optimized
variants of a model, rejects those outside the accuracy budget, measures the rest, and writes
the fastest (and the original) into a model repository with provenance.
"""

from ..timing import Environment, Latency
from .api import optimize
from .budget import Budget, parse_budget
from .fallback import FallbackReport, RankedNode
from .measure import Energy
from .metrics import Score
from .results import Measurements, OptimizeResult, SourceInfo, SplitInfo, VariantResult
from .sweep import ServingPlan, SweepPoint
from .variants import CATALOG, DEFAULT_VARIANTS, VariantSpec

__all__ = [
    "CATALOG",
    "DEFAULT_VARIANTS",
    "Budget",
    "Energy",
    "Environment",
    "FallbackReport",
    "Latency",
    "Measurements",
    "OptimizeResult",
    "RankedNode",
    "Score",
    "ServingPlan",
    "SourceInfo",
    "SplitInfo",
    "SweepPoint",
    "VariantResult",
    "VariantSpec",
    "optimize",
    "parse_budget",
]
