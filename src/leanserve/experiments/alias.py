"""An experiment as the request path meets it: the alias clients call, and what the server counts.

The router looks every requested name up among the aliases (one dictionary lookup), asks the
experiment's :class:`~.experiment.Recorder` for an arm and then calls that model version exactly
as a direct request would. This object keeps ready what that needs per request (each arm's
version and label, the unit of a request) and the counts the server's metrics read: requests
answered through the alias by arm and outcome, shadow copies answered by outcome, copies pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..stats import outcome_of
from .experiment import Experiment, Recorder

UNIT_HEADER: Final = "x-leanserve-unit"  # the default ExperimentConfig.unit_header
UNIT_PARAMETER: Final = "unit"  # a request parameter that carries the unit when no header does
ARM_HEADER: Final = b"x-leanserve-arm"  # the response header naming the arm that answered
ARM_PARAMETER: Final = "leanserve_arm"  # the response parameter naming it
MAX_UNIT_CHARS: Final = 256
OUTCOMES: Final = ("success", "client_error", "server_error")


class Alias:
    """One experiment under its alias, on the event loop. Arms go by their index in ``arms``."""

    def __init__(self, experiment: Experiment) -> None:
        config = experiment.config
        self.experiment = experiment
        # The request path records here, on the event loop; Experiments.flush hands it to the store.
        self.recorder = Recorder(experiment)
        self.name = experiment.name
        self.shadow = config.mode == "shadow"
        self.feedback = config.uses_feedback  # answers carry an id, outcomes keep their key
        self.arms = config.arms
        self.models = [a.model for a in config.arms]
        # Nothing to do after the answer but count it: no feedback key to keep, no shadow copy to send.
        self.plain = not self.shadow and not self.feedback
        # The version argument Router.infer takes for each arm: None asks for the default version.
        self.versions: list[str | None] = [None if a.version is None else str(a.version) for a in config.arms]
        # "model:version" of each arm; None where the version is the model's default, resolved per answer.
        self.labels: list[str | None] = [f"{a.model}:{a.version}" if a.version is not None else None for a in self.arms]
        # The response parameters naming each arm of a fixed version, shared by its answers (read only).
        self.parameters: list[dict[str, Any]] = [{ARM_PARAMETER: label} if label else {} for label in self.labels]
        self.successes = [0] * len(self.arms)  # answered through the alias, by arm (read with requests)
        self.failures: dict[tuple[int, str], int] = {}  # (arm, outcome) -> answered with an error
        self.copies: dict[str, int] = {}  # outcome -> shadow copies the candidate answered
        self.shadow_yield = config.shadow_yield
        self.copies_pending = 0  # shadow copies queued or in flight at the candidate

    def unit(self, headers: Iterable[tuple[str, str]], parameters: Mapping[str, Any] | None) -> str | None:
        """The request's unit: its unit header, else its ``unit`` parameter (a string or an integer)."""
        unit = self.experiment.unit_of(headers)
        if unit is None and parameters:
            value = parameters.get(UNIT_PARAMETER)
            if isinstance(value, str | int) and not isinstance(value, bool):
                unit = str(value) or None
        return unit[:MAX_UNIT_CHARS] if unit is not None else None

    def count_failure(self, arm: int, status: int) -> None:
        key = (arm, outcome_of(status))
        self.failures[key] = self.failures.get(key, 0) + 1

    def requests(self, arm: int, outcome: str) -> int:
        """Requests answered through the alias by ``arm`` with ``outcome``, since the server started."""
        return self.successes[arm] if outcome == "success" else self.failures.get((arm, outcome), 0)

    def count_copy(self, status: int) -> None:
        outcome = outcome_of(status)
        self.copies[outcome] = self.copies.get(outcome, 0) + 1


__all__ = ["ARM_HEADER", "ARM_PARAMETER", "OUTCOMES", "UNIT_HEADER", "UNIT_PARAMETER", "Alias", "outcome_of"]
