"""An experiment at run time: its configuration, assignment, records and decisions, in one object.

The request path calls :meth:`Experiment.choose_arm`, :meth:`~Experiment.record` (and for a
shadow :meth:`~Experiment.mirror` and :meth:`~Experiment.record_comparison`) on the event loop;
they are cheap (a hash, a few dictionary updates). :meth:`~Experiment.evaluate` reads the store,
applies the decision rule and acts on it (a canary advances or rolls back by itself); a
background thread started by :meth:`~Experiment.start` runs it every second. Routing follows an
immutable :class:`_Routing` that evaluation replaces in one assignment, so the event loop never
waits on the evaluator and never sees a half-made change.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, UsageError
from .analysis import evidence, feedback_moments, histogram, outcomes
from .assignment import Mirror, Split, canary_split, choose, mirror, only, unit_point
from .comparison import Comparison
from .config import Arm, ExperimentConfig
from .decision import Action, Decision, decide
from .quantiles import buckets_of
from .records import (
    AGREED,
    ASSIGNED,
    COMPARED,
    ERRORS,
    MIRRORED,
    ORPHAN_FEEDBACK,
    REQUESTS,
    SHED,
    SIMILARITY,
    ExperimentState,
    FeedbackTotals,
    LoggedDecision,
    Phase,
    Snapshot,
    Tally,
)
from .statistics import NormalMixture, json_number, proportion_interval
from .store import ExperimentStore, SqliteStore

log = logging.getLogger("leanserve.experiments")


@dataclass(frozen=True, slots=True)
class _Routing:
    state: ExperimentState
    split: Split
    running: bool = field(init=False)  # read per request: computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "running", self.state.phase == "running")


class Experiment:
    def __init__(
        self,
        config: ExperimentConfig,
        store: ExperimentStore,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.mixture = NormalMixture.tuned(config.planned_samples, config.alpha)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._index = {arm: i for i, arm in enumerate(config.arms)}
        self._salt = config.effective_salt
        self._shadow_salt = self._salt + "/shadow"
        self._keys = config.uses_feedback  # whether outcomes keep their feedback key
        self._lock = threading.Lock()  # one state change at a time: evaluation or an operator's call
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Shadow copies this process sent and shed, for its metrics (the store keeps the totals
        # of every process and restart).
        self.mirrored = 0
        self.shed = 0
        labels = tuple(a.label for a in config.arms)
        state = store.state()
        if state.arms and state.arms != labels:
            raise ConfigError(
                config.source or "experiments.toml",
                f"experiments.{config.name}.arms",
                f"{list(labels)} differ from the arms its records were counted on, {list(state.arms)}",
                hint="give the changed experiment a new name (or delete its records)",
            )
        if config.mode == "canary" and state.step >= len(config.steps):
            raise ConfigError(
                config.source or "experiments.toml",
                f"experiments.{config.name}.steps",
                f"the canary stands at step {state.step + 1}, but only {len(config.steps)} steps are configured",
                hint="keep the steps of a running canary, or give it a new name",
            )
        if not state.arms:
            state = replace(state, arms=labels)
            store.set_state(state)
        self._routing = _Routing(state, self._split_for(state))

    @classmethod
    def open(cls, config: ExperimentConfig, path: Path | str, **kwargs: Any) -> Experiment:
        """An experiment whose records live in the SQLite file ``path`` (shared by experiments)."""
        return cls(config, SqliteStore(path, config.name, feedback_window_s=config.feedback_window_s), **kwargs)

    # ---- what the request path calls -------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> ExperimentState:
        return self._routing.state

    def unit_of(self, headers: Iterable[tuple[str, str]]) -> str | None:
        """The unit in a request's (lower-case name, value) headers, if it carries one."""
        wanted = self.config.unit_header
        return next((v for k, v in headers if k == wanted and v), None)

    def choose_arm(self, unit: str | None = None) -> Arm:
        """The arm that answers this request: sticky for a unit, random without one."""
        return self.config.arms[self.assign(unit)]

    def assign(self, unit: str | None = None) -> int:
        """:meth:`choose_arm` as the index of the arm in ``config.arms``: what a server's request
        path keeps (an index is hashed and compared for free; an :class:`Arm` is not)."""
        routing = self._routing  # one read: the split and the step belong together
        i = choose(routing.split, self._salt, unit, self._rng)
        if routing.running:
            self.store.add(ASSIGNED, i, routing.state.step)
        return i

    def mirror(self, unit: str | None, candidate_in_flight: int) -> Arm | None:
        """Shadow: the candidate to send a copy of this request to, or None (not a shadow, not
        running, sampled out, or shed because the candidate has too much in flight)."""
        verdict = self._mirror(unit, candidate_in_flight)
        if verdict is Mirror.SEND:
            self.mirrored += 1
            self.store.add(MIRRORED, 1, 0)
            return self.config.arms[1]
        if verdict is Mirror.SHED:
            self.shed += 1
            self.store.add(SHED, 1, 0)
        return None

    def _mirror(self, unit: str | None, candidate_in_flight: int) -> Mirror:
        if self.config.mode != "shadow" or not self._routing.running:
            return Mirror.SAMPLED_OUT
        # Its own salt: which units are copied must not line up with any split of the same units.
        point = unit_point(self._shadow_salt, unit) if unit is not None else self._rng.random()
        return mirror(point, self.config.shadow_sample, candidate_in_flight, self.config.shadow_max_in_flight)

    def record(self, arm: Arm | int, latency_s: float, ok: bool, key: str | None = None) -> None:
        """One answered request (or shadow copy) of ``arm`` (or its index, as :meth:`assign` gives
        it). ``key``, a response id or the unit, lets :meth:`feedback` find the arm later; it is
        kept only when the primary metric needs feedback."""
        i = arm if type(arm) is int else self._arm_index(arm)  # type: ignore[arg-type]
        self.store.record_outcome(i, self._routing.state.step, latency_s, ok, key if self._keys else None)

    def record_comparison(self, comparison: Comparison, arm: Arm | None = None) -> None:
        """Shadow: how the candidate's answer compared with the control's (see :func:`.compare_outputs`)."""
        i = self._arm_index(arm) if arm is not None else 1
        self.store.add(COMPARED, i, 0)
        if comparison.agree:
            self.store.add(AGREED, i, 0)
        self.store.add(SIMILARITY, i, 0, comparison.similarity)

    def feedback(self, key: str, reward: float = 1.0) -> None:
        """A reward (or, for conversion, any positive value) for the response or unit ``key``."""
        self.store.feedback(key, reward)

    def _arm_index(self, arm: Arm) -> int:
        try:
            return self._index[arm]
        except KeyError:
            raise UsageError(
                f"{arm.label} is not an arm of experiment {self.name!r}",
                hint="record the Arm that choose_arm or mirror returned",
            ) from None

    # ---- decisions ------------------------------------------------------------------------------

    def evaluate(self) -> Decision:
        """Apply the decision rule to everything recorded so far, and act on it."""
        with self._lock:
            snapshot = self.store.snapshot(decisions=1)
            state = self._adopt(snapshot.state)  # another process sharing the file may have moved it
            if state.phase != "running":
                return Decision(Action.CONTINUE, "finished", f"the experiment is {state.phase}")
            decision = decide(self.config, evidence(self.config, snapshot, self.mixture), state)
            applied = self._apply(decision, state)
            last = snapshot.decisions[-1] if snapshot.decisions else None
            if applied or last is None or (last.action, last.rule) != (decision.action.value, decision.rule):
                self._log(decision, applied)
            return decision

    def _apply(self, decision: Decision, state: ExperimentState) -> bool:
        if decision.action is Action.ADVANCE:
            self._set(replace(state, step=state.step + 1))
        elif decision.action is Action.ROLLBACK:
            self._set(replace(state, phase="rolled_back"))
        elif decision.action is Action.STOP:
            self._set(replace(state, phase="stopped"))
        elif decision.action is Action.PROMOTE and (self.config.mode == "canary" or self.config.auto_promote):
            self._set(replace(state, phase="promoted", winner=decision.arm))
        else:
            return False
        return True

    def promote(self, arm: Arm | None = None, reason: str = "promoted by the operator") -> None:
        """Send everything to ``arm`` (default: the one candidate) from now on."""
        if arm is None:
            if len(self.config.arms) != 2:
                raise UsageError(f"experiment {self.name!r} has several candidates", hint="name the arm to promote")
            arm = self.config.arms[1]
        self._operator("promoted", self._arm_index(arm), Action.PROMOTE, reason)

    def rollback(self, reason: str = "rolled back by the operator") -> None:
        """Send everything to the control from now on: the candidate failed."""
        self._operator("rolled_back", None, Action.ROLLBACK, reason)

    def stop(self, reason: str = "stopped by the operator") -> None:
        """End the experiment without a winner; the control serves everything."""
        self._operator("stopped", None, Action.STOP, reason)

    def _operator(self, phase: Phase, winner: int | None, action: Action, reason: str) -> None:
        with self._lock:
            state = self._adopt(self.store.state())
            self._set(replace(state, phase=phase, winner=winner))
            self._log(Decision(action, "operator", reason, winner), applied=True)

    def _adopt(self, state: ExperimentState) -> ExperimentState:
        if state != self._routing.state:
            self._routing = _Routing(state, self._split_for(state))
        return state

    def _set(self, state: ExperimentState) -> None:
        self.store.set_state(state)  # persisted before routing follows: a restart resumes here
        self._routing = _Routing(state, self._split_for(state))

    def _log(self, decision: Decision, applied: bool) -> None:
        figures = {**decision.figures, "applied": applied}
        self.store.log_decision(
            LoggedDecision(self._clock(), decision.action.value, decision.rule, decision.reason, decision.arm, figures)
        )
        if decision.action is not Action.CONTINUE:
            log.info("experiment %s: %s (%s)", self.name, decision.action.value, decision.reason)

    def _split_for(self, state: ExperimentState) -> Split:
        arms = len(self.config.arms)
        if state.phase == "promoted":
            return only(state.winner if state.winner is not None else 1, arms)
        if state.phase != "running" or self.config.mode == "shadow":
            return only(0, arms)
        if self.config.mode == "canary":
            return canary_split(self.config.steps[state.step])
        return Split.from_weights([a.weight for a in self.config.arms])

    # ---- the evaluator thread ---------------------------------------------------------------------

    def start(self, interval_s: float = 1.0) -> None:
        """Evaluate every ``interval_s`` on a background thread until :meth:`close`."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.evaluate()
                except Exception:  # one bad evaluation (a locked file) must not end the loop
                    log.exception("experiment %s: evaluation failed", self.name)

        self._thread = threading.Thread(target=run, name=f"leanserve-evaluate-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop evaluating and close the store (writing what is pending)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.store.close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- status -----------------------------------------------------------------------------------

    def status(self, decisions: int = 20) -> dict[str, Any]:
        """Everything an operator or a dashboard shows, JSON-able. Reads the store: call it off
        the event loop (``asyncio.to_thread``)."""
        snapshot = self.store.snapshot(decisions=decisions)
        state = snapshot.state
        ev = evidence(self.config, snapshot, self.mixture)
        current = decide(self.config, ev, state) if state.phase == "running" else None
        split = self._split_for(state)
        return {
            "name": self.name,
            "mode": self.config.mode,
            "phase": state.phase,
            "step": state.step if self.config.mode == "canary" else None,
            "share_percent": self.config.steps[state.step] if self.config.mode == "canary" else None,
            "winner": state.winner,
            "primary_metric": self.config.primary_metric,
            "alpha": self.config.alpha,
            "arms": [self._arm_status(i, snapshot, split.share(i)) for i in range(len(self.config.arms))],
            "shadow": self._shadow_status(snapshot) if self.config.mode == "shadow" else None,
            "checks": [c.figures() for c in ev.checks],
            "srm": None
            if ev.srm is None
            else {
                "statistic": json_number(ev.srm.statistic),
                "dof": ev.srm.dof,
                "p_value": ev.srm.p_value,
                "sequential_p": ev.srm.sequential_p,
                "test": ev.srm.test,
                "alarm": ev.srm.alarm,
                "alpha": self.config.srm_alpha,
            },
            "decision": None
            if current is None
            else {"action": current.action.value, "rule": current.rule, "reason": current.reason, "arm": current.arm},
            "decisions": [
                {"at": d.at, "action": d.action, "rule": d.rule, "reason": d.reason, "arm": d.arm}
                for d in snapshot.decisions
            ],
            "orphan_feedback": int(snapshot.tally.count(ORPHAN_FEEDBACK, 0)),
        }

    def _arm_status(self, i: int, snapshot: Snapshot, share: float) -> dict[str, Any]:
        arm = self.config.arms[i]
        tally = snapshot.tally
        o = outcomes(tally, i)
        c = self.mixture.concentration
        alpha = self.config.alpha
        h = histogram(tally, i)
        result: dict[str, Any] = {
            "label": arm.label,
            "model": arm.model,
            "version": arm.version,
            "role": "control" if i == 0 else "candidate",
            "share": share,
            "assigned": int(tally.count(ASSIGNED, i)),
            "requests": o.n,
            "errors": int(o.total),
            "error_rate": proportion_interval(int(o.total), o.n, alpha, c).as_dict(),
            "latency_s": {
                name: {
                    **h.interval(p, alpha, c).as_dict(),
                    "fixed_n": h.fixed_interval(p, alpha).as_dict(),
                }
                for name, p in (("p50", 0.5), ("p99", 0.99))
            },
        }
        if self.config.uses_feedback:
            totals = snapshot.feedback.get(i, FeedbackTotals())
            m = feedback_moments(self.config, totals)
            result["feedback"] = {
                "responses": totals.exposed,
                "with_feedback": totals.rewarded,
                "n": m.n,
                "mean": json_number(m.mean),
            }
        return result

    def _shadow_status(self, snapshot: Snapshot) -> dict[str, Any]:
        tally = snapshot.tally
        compared = int(tally.count(COMPARED, 1))
        agreed = int(tally.count(AGREED, 1))
        return {
            "mirrored": int(tally.count(MIRRORED, 1)),
            "shed": int(tally.count(SHED, 1)),
            "compared": compared,
            "agreement": proportion_interval(agreed, compared, self.config.alpha, self.mixture.concentration).as_dict(),
            "mean_similarity": json_number(tally.count(SIMILARITY, 1) / compared) if compared else None,
        }


class Recorder:
    """An experiment's request-path calls for one thread (a server's event loop), without a lock each.

    :meth:`Experiment.assign` and :meth:`Experiment.record` are safe from any thread: each takes the
    store's lock, and inside a busy server (where a whole request costs 40-60 us) each costs 1.5-2.5
    us. A recorder counts the same for a fraction of that: per request it adds one to its arm's
    count and appends the latency to its arm's list, both of which it alone owns, and :meth:`flush`
    sums them (vectorized) into one :class:`~.records.Tally` for the store. Its owner calls it every
    100 ms or so, before reading the status, and before closing the experiment, and before it
    passes on feedback (which would otherwise reach the store before the response it is for, and
    count as orphaned). Until then the counts are in memory only. Counts belong to the canary step
    when they were made: when evaluation moves the experiment on, the next call flushes what was
    counted before.

    Not thread-safe: one recorder per recording thread, and only that thread calls it.
    """

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        arms = len(experiment.config.arms)
        self._salt = experiment._salt
        self._random = experiment._rng.random
        self._keys = experiment._keys
        self._assigned = [0] * arms  # assignments by arm (while running)
        self._latencies: list[list[float]] = [[] for _ in range(arms)]  # each arm's outcomes' latencies
        self._errors = [0] * arms  # failed outcomes by arm
        self._copies: list[tuple[str, int, int]] = []  # shadow copies sent or shed: (kind, arm, step)
        self._responses: list[tuple[str, int, float]] = []
        self._follow(experiment._routing)

    def _follow(self, routing: _Routing) -> None:
        """Count under ``routing`` from now on: its step, and its split as the two tuples that
        :meth:`assign` bisects (one attribute read each, not three)."""
        self._routing = routing
        self._step = routing.state.step
        self._uppers = routing.split.uppers
        self._slots = routing.split.slots
        self._running = routing.running

    def assign(self, unit: str | None = None) -> int:
        """:meth:`Experiment.assign`, counted here."""
        routing = self.experiment._routing  # one read: the split and the step belong together
        if routing is not self._routing:
            self._adopt(routing)
        point = self._random() if unit is None else unit_point(self._salt, unit)
        i = self._slots[bisect_right(self._uppers, point)]  # Split.arm_at, without its call
        if self._running:
            self._assigned[i] += 1
        return i

    def record(self, arm: int, latency_s: float, ok: bool, key: str | None = None) -> None:
        """:meth:`Experiment.record` of the arm with index ``arm``, counted here."""
        if self.experiment._routing is not self._routing:
            self._adopt(self.experiment._routing)
        self._latencies[arm].append(latency_s)
        if not ok:
            self._errors[arm] += 1
        if key is not None and self._keys:
            self._responses.append((key, arm, self.experiment._clock()))

    def _adopt(self, routing: _Routing) -> None:
        """Evaluation replaced the routing: what was counted so far belongs to the step before."""
        if routing.state.step != self._step:
            self.flush()
        self._follow(routing)

    def mirror(self, unit: str | None, candidate_pending: int) -> Mirror:
        """Shadow: :meth:`Experiment.mirror`'s verdict on copying this request, with the copies the
        candidate has pending (queued or in flight). A shed copy is counted here; a copy to send is
        counted by :meth:`sent` when it goes, or by :meth:`shed` if it never does."""
        verdict = self.experiment._mirror(unit, candidate_pending)
        if verdict is Mirror.SHED:
            self.shed()
        return verdict

    def sent(self) -> None:
        """A shadow copy went to the candidate."""
        self.experiment.mirrored += 1
        self._copies.append((MIRRORED, 1, 0))

    def shed(self) -> None:
        """A shadow copy was dropped: the candidate or the server was too busy for it."""
        self.experiment.shed += 1
        self._copies.append((SHED, 1, 0))

    def flush(self) -> None:
        """Hand everything counted so far to the experiment's store."""
        latencies = self._latencies
        if not (any(self._assigned) or any(latencies) or self._copies or self._responses):
            return
        step = self._step
        tally = Tally()
        counters = tally.counters
        for arm, lats in enumerate(latencies):
            if self._assigned[arm]:
                counters[(ASSIGNED, arm, step)] = float(self._assigned[arm])
            if lats:
                counters[(REQUESTS, arm, step)] = float(len(lats))
                buckets = np.bincount(buckets_of(np.asarray(lats, np.float64)))
                for bucket in np.flatnonzero(buckets).tolist():
                    tally.latency[(arm, bucket)] = int(buckets[bucket])
            if self._errors[arm]:
                counters[(ERRORS, arm, step)] = float(self._errors[arm])
        for key in self._copies:
            counters[key] = counters.get(key, 0.0) + 1.0
        responses = self._responses
        arms = len(latencies)
        self._assigned, self._errors = [0] * arms, [0] * arms
        self._latencies = [[] for _ in range(arms)]
        self._copies, self._responses = [], []
        self.experiment.store.merge(tally, responses)
