"""Replace a model safely: A/B splits, shadow traffic and canaries between versions, decided by
always-valid statistics.

An experiment is an alias in front of two or more model versions (``experiments.toml``)::

    experiments = load_experiments(Path("experiments.toml"))
    exp = Experiment.open(experiments["digits"], "experiments.db")
    exp.start()                                   # evaluates every second: advance, roll back, promote
    arm = exp.choose_arm(exp.unit_of(headers))    # per request, on the event loop
    exp.record(arm, latency_s, ok, key=request_id)
    exp.feedback(request_id, reward)              # when a reward arrives, later
    exp.status()                                  # JSON-able, off the event loop
    exp.close()

Modules: :mod:`.config` (the schema), :mod:`.assignment` (which arm), :mod:`.statistics` and
:mod:`.quantiles` (always-valid intervals, sample-ratio test, Holm), :mod:`.analysis` (counts to
evidence), :mod:`.decision` (the rule), :mod:`.store` (SQLite), :mod:`.experiment` (all of it).
"""

from .comparison import Comparison, compare_outputs
from .config import Arm, ExperimentConfig, load_experiments, parse_experiments
from .decision import Action, Check, Decision, decide
from .experiment import Experiment, Recorder
from .records import ExperimentState
from .store import ExperimentStore, SqliteStore

__all__ = [
    "Action",
    "Arm",
    "Check",
    "Comparison",
    "Decision",
    "Experiment",
    "ExperimentConfig",
    "ExperimentState",
    "ExperimentStore",
    "Recorder",
    "SqliteStore",
    "compare_outputs",
    "decide",
    "load_experiments",
    "parse_experiments",
]
