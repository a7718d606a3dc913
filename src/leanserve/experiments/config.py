"""The ``experiments.toml`` schema: one ``[experiments.NAME]`` table per experiment.

An experiment is an alias (its NAME) in front of two or more model versions, its arms::

    [experiments.digits]
    mode = "canary"                       # "split" | "shadow" | "canary"
    arms = [{model = "digits", version = 1}, {model = "digits", version = 2}]
    steps = [1, 5, 25, 50, 100]           # canary: the candidate's share, in percent
    min_samples_per_step = 500
    primary_metric = "error_rate"
    max_p99_ratio = 1.25

The dataclasses below are the schema; :func:`leanserve.config.from_table` reads them, so a field's
type, minimum and choices live in one place. What one field cannot say alone (a canary needs
exactly two arms, ``steps`` end at 100, a shadow has no user-facing reward) is checked after, in
:func:`parse_experiments`. Every problem names the file, the dotted field and the reason.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..config import from_table
from ..errors import ConfigError
from .statistics import SrmTest

Mode = Literal["split", "shadow", "canary"]
MODES: tuple[str, ...] = get_args(Mode)
Metric = Literal["error_rate", "latency_p99", "reward", "conversion"]
METRICS: tuple[str, ...] = get_args(Metric)
# Metrics read from feedback that arrives after the response (a click, a rating, a purchase).
FEEDBACK_METRICS: frozenset[str] = frozenset({"reward", "conversion"})
# Metrics where less is better; for the others (reward, conversion) more is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"error_rate", "latency_p99"})

DEFAULT_STEPS: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _probability(value: float) -> str | None:
    return None if 0 < value < 1 else f"must lie strictly between 0 and 1, got {value}"


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else f"must lie in (0, 1], got {value}"


def _steps(steps: tuple[float, ...]) -> str | None:
    if not steps:
        return "needs at least one step"
    if any(not 0 < s <= 100 for s in steps):
        return f"every step is a percentage in (0, 100], got {list(steps)}"
    if any(b <= a for a, b in itertools.pairwise(steps)):
        return f"steps must increase, got {list(steps)}"
    if steps[-1] != 100:
        return f"the last step must be 100 (the candidate serves everything before promotion), got {steps[-1]}"
    return None


def _header(name: str) -> str | None:
    return None if name == name.lower() else f"header names are matched lower-case; write {name.lower()!r}"


@dataclass(frozen=True, slots=True)
class Arm:
    """One model version an experiment sends traffic to."""

    model: str
    version: int | None = field(default=None, metadata={"minimum": 1})  # None: the model's default version
    # Relative share of a split (normalised over the arms); a canary's steps and a shadow ignore it.
    weight: float = field(default=1.0, metadata={"check": _positive})

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version if self.version is not None else 'default'}"


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    name: str = field(metadata={"toml": False})  # the table's key: the alias clients call
    mode: Mode
    # For shadow and canary, arms[0] is the control (it answers) and arms[1] the candidate.
    arms: tuple[Arm, ...]
    salt: str | None = None  # None: the name. A new salt reshuffles every unit.
    # The request header that carries the unit (user, session) for sticky assignment. The
    # server's front ends capture this one header (and the request parameter ``unit``).
    unit_header: str = field(default="x-leanserve-unit", metadata={"check": _header})
    steps: tuple[float, ...] = field(default=DEFAULT_STEPS, metadata={"check": _steps})
    min_samples_per_step: int = field(default=500, metadata={"minimum": 1})  # candidate outcomes at a step
    min_samples: int = field(default=100, metadata={"minimum": 1})  # per arm, before any promotion
    primary_metric: Metric = "error_rate"
    # Harm the candidate may do on the primary metric and still be promoted: an absolute
    # difference for rates and rewards, a relative one (0.1 = 10% slower) for latency_p99.
    non_inferiority_margin: float = field(default=0.0, metadata={"minimum": 0.0})
    # Guardrails (None: off). An absolute increase of the error rate (0.01 = one percentage point).
    max_error_rate_increase: float | None = field(default=0.01, metadata={"minimum": 0.0})
    max_p99_ratio: float | None = field(default=1.25, metadata={"minimum": 1.0})  # candidate p99 / control p99
    min_shadow_agreement: float | None = field(default=None, metadata={"check": _fraction})
    alpha: float = field(default=0.05, metadata={"check": _probability})
    srm_alpha: float = field(default=0.001, metadata={"check": _probability})
    # Which sample-ratio test raises the alarm: the chi-square (one look at a time, the classic
    # check) or the always-valid sequential test, whose false-alarm rate stays under srm_alpha
    # however often it is evaluated (see docs/experiments.md for both rates measured).
    srm_test: SrmTest = "sequential"
    # Outcomes per arm at which you expect to decide: the always-valid intervals are tuned to be
    # tightest there (it sets the mixing variance; see statistics.optimal_mixing_ratio).
    planned_samples: int = field(default=10_000, metadata={"minimum": 10})
    # Split and shadow: apply a "promote" decision by itself (a canary always does, after its last step).
    auto_promote: bool = False
    # Shadow: the fraction of requests copied to the candidate, and the candidate's in-flight
    # requests beyond which copies are shed so the shadow never slows the control.
    shadow_sample: float = field(default=1.0, metadata={"check": _fraction})
    shadow_max_in_flight: int = field(default=32, metadata={"minimum": 1})
    # Shadow: copies wait for a moment when the server has nothing else to do (an event-loop turn
    # that found no other work, the control with nothing in flight) and are shed when none comes
    # soon enough; false sends each copy as soon as the control has answered.
    shadow_yield: bool = True
    # How long a response waits for its reward or conversion before it counts as none.
    feedback_window_s: float = field(default=86_400.0, metadata={"check": _positive})
    source: str | None = field(default=None, metadata={"toml": False})  # the file read, for error messages

    @property
    def effective_salt(self) -> str:
        return self.salt if self.salt is not None else self.name

    @property
    def control(self) -> Arm:
        return self.arms[0]

    @property
    def candidates(self) -> tuple[Arm, ...]:
        return self.arms[1:]

    @property
    def uses_feedback(self) -> bool:
        return self.primary_metric in FEEDBACK_METRICS


# Keys that mean something in one mode only: given in another, they are a mistake worth naming.
_MODE_ONLY: Mapping[str, str] = {
    "steps": "canary",
    "min_samples_per_step": "canary",
    "min_shadow_agreement": "shadow",
    "shadow_sample": "shadow",
    "shadow_max_in_flight": "shadow",
    "shadow_yield": "shadow",
}


def parse_experiment(name: str, table: Any, source: str) -> ExperimentConfig:
    """One ``[experiments.NAME]`` table, read and checked as a whole."""
    where = f"experiments.{name}"
    config = from_table(ExperimentConfig, table, source, where, {"name": name, "source": source})
    for key, mode in _MODE_ONLY.items():
        if key in table and config.mode != mode:
            raise ConfigError(source, f"{where}.{key}", f"only applies to mode {mode!r}, not {config.mode!r}")
    arms = config.arms
    if len(arms) < 2:
        raise ConfigError(source, f"{where}.arms", f"an experiment needs at least 2 arms, got {len(arms)}")
    if config.mode != "split" and len(arms) != 2:
        raise ConfigError(
            source,
            f"{where}.arms",
            f"a {config.mode} compares one candidate with the control: exactly 2 arms, got {len(arms)}",
            hint="run one experiment per candidate",
        )
    seen: dict[tuple[str, int | None], int] = {}
    for i, arm in enumerate(arms):
        version = (arm.model, arm.version)
        if version in seen:
            raise ConfigError(source, f"{where}.arms[{i}]", f"{arm.label} is already arm {seen[version]}")
        seen[version] = i
    if config.mode == "shadow" and config.uses_feedback:
        raise ConfigError(
            source,
            f"{where}.primary_metric",
            f"{config.primary_metric!r} needs user feedback, which a shadow's answers never reach",
            hint='use "error_rate" or "latency_p99", or run a split',
        )
    return config


def parse_experiments(data: Mapping[str, Any], source: str) -> dict[str, ExperimentConfig]:
    """Every experiment of a parsed ``experiments.toml``, by name."""
    extra = sorted(set(data) - {"experiments"})
    if extra:
        raise ConfigError(source, extra[0], "unknown table", hint="experiments live under [experiments.NAME]")
    tables = data.get("experiments", {})
    if not isinstance(tables, dict):
        raise ConfigError(source, "experiments", f"expected a table, got {type(tables).__name__}")
    return {name: parse_experiment(name, table, source) for name, table in tables.items()}


def load_experiments(path: Path) -> dict[str, ExperimentConfig]:
    """Read ``experiments.toml``; a missing file means no experiments."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), None, f"not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), None, f"cannot be read: {e}") from e
    return parse_experiments(data, str(path))
