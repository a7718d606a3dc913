"""What ``optimize`` returns and what report.json holds: one record per variant, and the run."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..timing import Environment, Latency
from .fallback import FallbackReport
from .measure import Energy
from .metrics import Score
from .sweep import ServingPlan, SweepPoint

Status = Literal["accepted", "rejected", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Measurements:
    latency: Latency  # batch 1, with the plan's threads
    throughput: float  # inferences per second at throughput_batch
    throughput_batch: int
    peak_memory_mb: float | None  # peak RSS growth over load + one batch; None: not measurable
    file_size_bytes: int
    load_time_s: float
    conversion_time_s: float
    energy: Energy
    providers: tuple[str, ...]
    # Latency and throughput timed through the model's handlers (``--requests``): what clients see.
    end_to_end: bool = False


@dataclass(frozen=True, slots=True)
class VariantResult:
    name: str
    method: str  # how it was made: its VariantSpec's method, or "original"
    platform: str
    status: Status
    reason: str
    score: Score | None = None
    measurements: Measurements | None = None
    plan: ServingPlan | None = None
    sweep: tuple[SweepPoint, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    fallback: FallbackReport | None = None
    speedup: float | None = None  # the original's batch-1 p50 over this one's
    version: int | None = None  # the repository version it was written as, if kept
    note: str = ""  # why it was kept or not


@dataclass(frozen=True, slots=True)
class SourceInfo:
    kind: str
    origin: str
    sha256: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SplitInfo:
    calibration_examples: int
    evaluation_examples: int
    seed: int
    data: str


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    model: str
    repository: Path
    source: SourceInfo
    metric: str
    budget: str
    split: SplitInfo
    original: VariantResult
    variants: tuple[VariantResult, ...]
    chosen: str  # a variant name, or "original"
    default_version: int
    served_original: bool
    message: str
    environment: Environment
    objective: str
    higher_is_better: bool = True  # of the metric: whether a larger figure is better
    report_json: Path | None = None
    report_html: Path | None = None

    def variant(self, name: str) -> VariantResult:
        if name == "original":
            return self.original
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)  # type: ignore[no-any-return]


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths and enums as plain JSON values; a non-finite float becomes None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a variant whose outputs were NaN shows no figure
    return value
