"""The server's experiments: read at start-up, started through the API, served under their aliases.

They come from ``<repository>/experiments.toml`` and from ``POST /v2/experiments``, whose tables
are kept in ``<state dir>/experiments.json`` so that a restart serves them again (the file wins
over a started experiment of the same name). Their records (counts, latencies, feedback, phase,
decisions) live in ``<state dir>/experiments.sqlite3``, so a restart loses none of them.

Who may do what:

- read (``GET /v2/experiments[/{name}]``): as the dashboard, which shows the same figures: open
  without an admin token; with one, the admin token or the dashboard's sign-in cookie;
- start, stop, promote, roll back: the admin token, as model control (off without one);
- feedback: as inference (open unless the server has ``--token``, then that token). Rewards come
  from the applications that call the models, which should not hold a token that can unload them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from ..errors import ConfigError, Conflict, InvalidInput, LeanserveError, ModelNotFound, UsageError
from ..experiments import Arm, Experiment, ExperimentConfig, load_experiments
from ..experiments.alias import Alias
from ..experiments.config import parse_experiment
from ..registry import ModelRegistry
from ..repository import safe_model_name
from ..router import Router
from .auth import Tokens, require_admin, require_dashboard, require_inference
from .handlers import Reply, error_reply, json_reply

log = logging.getLogger("leanserve.experiments")

FILE_NAME: Final = "experiments.toml"  # in the repository
STORE_NAME: Final = "experiments.sqlite3"  # in the state directory
STARTED_NAME: Final = "experiments.json"  # in the state directory: those started through the API
API_SOURCE: Final = "POST /v2/experiments"
MAX_KEY_CHARS: Final = 256
ACTIONS: Final = ("stop", "promote", "rollback")
FLUSH_SECONDS: Final = 0.1  # how often the request path's counts reach the stores (and the evaluators)


@dataclass(frozen=True, slots=True)
class ExperimentOptions:
    file: Path | None = None  # None: <repository>/experiments.toml
    evaluate_seconds: float = 1.0  # how often each experiment applies its decision rule

    def __post_init__(self) -> None:
        if not self.evaluate_seconds > 0:
            raise UsageError(f"evaluate_seconds must be positive, not {self.evaluate_seconds}")


class Experiments:
    """Every experiment the server runs, by alias; the router's ``aliases`` is this registry's view."""

    def __init__(
        self, registry: ModelRegistry, router: Router, state_dir: Path, options: ExperimentOptions | None = None
    ) -> None:
        self.registry = registry
        self.router = router
        self.options = options or ExperimentOptions()
        self.file = self.options.file or registry.repository / FILE_NAME
        self.store_path = state_dir / STORE_NAME
        self.started_path = state_dir / STARTED_NAME
        self._configs: dict[str, ExperimentConfig] = {}
        self._started: dict[str, dict[str, Any]] = {}  # the tables of those started through the API
        self._lock = asyncio.Lock()  # one start at a time: a name is checked and taken together
        self._flusher: asyncio.Task[None] | None = None

    @property
    def aliases(self) -> dict[str, Alias]:
        return self.router.aliases

    # ---- start-up and shutdown -----------------------------------------------------------------

    def read(self) -> None:
        """Read experiments.toml and those started through the API. Raises ConfigError: call it
        before the server listens, so that a mistake stops it at once."""
        configs = load_experiments(self.file)
        started = self._read_started()
        for name, table in started.items():
            if name in configs:
                log.warning("experiment %r, started through the API, is in %s too: the file's is used", name, self.file)
                continue
            configs[name] = parse_experiment(name, table, str(self.started_path))
            self._started[name] = table
        self._configs = configs

    def open(self) -> None:
        """After the repository loaded: check each experiment against its models, open its records,
        start evaluating it and serve its alias."""
        opened: list[Experiment] = []
        try:
            for config in self._configs.values():
                self._check(config)
                if not opened:
                    self.store_path.parent.mkdir(parents=True, exist_ok=True)
                opened.append(Experiment.open(config, self.store_path))
        except BaseException:
            for exp in opened:
                exp.close()
            raise
        for exp in opened:
            self._serve(exp)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every(FLUSH_SECONDS))
        if opened:
            log.info("experiments: %s", ", ".join(f"{e.name} ({e.config.mode}, {e.state.phase})" for e in opened))

    async def close(self) -> None:
        """Stop evaluating and write every experiment's pending records (after the last request)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.router.shadows.drop()  # copies still waiting for an idle moment: shed, and counted
        self.flush()
        experiments = [a.experiment for a in self.aliases.values()]
        self.aliases.clear()
        for exp in experiments:
            await asyncio.to_thread(exp.close)

    def flush(self) -> None:
        """Hand what the request path counted to the experiments' stores (on the event loop)."""
        for alias in self.aliases.values():
            alias.recorder.flush()

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.flush()

    # ---- the API ---------------------------------------------------------------------------------

    async def start(self, table: Mapping[str, Any]) -> Alias:
        """Start an experiment from a table with experiments.toml's fields and its ``name``."""
        fields = dict(table)
        name = fields.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(API_SOURCE, "name", "an experiment needs a name: the alias clients will call")
        config = parse_experiment(name, fields, API_SOURCE)
        async with self._lock:
            if name in self.aliases:
                raise Conflict(f"experiment {name!r} exists already", hint="choose another name")
            if any(m.name == name for m in self.registry.snapshot()):
                raise Conflict(f"{name!r} is a model's name: an alias cannot take it", hint="choose another name")
            self._check(config)
            exp = await asyncio.to_thread(self._open_started, config, fields)
            return self._serve(exp)

    def get(self, name: str) -> Alias:
        alias = self.aliases.get(name)
        if alias is None:
            raise ModelNotFound(
                f"no experiment {name[:80]!r}", hint=f"experiments: {', '.join(sorted(self.aliases)) or 'none'}"
            )
        return alias

    def summaries(self) -> list[dict[str, Any]]:
        """What each experiment is, from memory (cheap)."""
        return [_summary(a, "api" if a.name in self._started else "file") for a in self.aliases.values()]

    async def statuses(self) -> list[dict[str, Any]]:
        """Every experiment's status, up to the last request."""
        self.flush()
        aliases = list(self.aliases.values())
        return await asyncio.to_thread(lambda: [a.experiment.status() for a in aliases])  # SQLite: off the loop

    # ---- inside --------------------------------------------------------------------------------

    def _check(self, config: ExperimentConfig) -> None:
        source = config.source or str(self.file)
        where = f"experiments.{config.name}"
        try:
            safe_model_name(config.name)
        except InvalidInput as e:
            raise ConfigError(source, where, f"{e.message}: an alias is called like a model", e.hint) from None
        models = {m.name: m for m in self.registry.snapshot()}
        if config.name in models:
            raise ConfigError(
                source,
                where,
                f"{config.name!r} is a model's name too: an alias and a model cannot share it",
                hint="give the experiment another name",
            )
        for i, arm in enumerate(config.arms):
            model = models.get(arm.model)
            if model is None:
                raise ConfigError(
                    source,
                    f"{where}.arms[{i}]",
                    f"no model {arm.model!r} in the repository",
                    hint=f"models: {', '.join(sorted(models)) or 'none'}",
                )
            versions = [v.version for v in model.versions]
            if arm.version is not None and arm.version not in versions:
                raise ConfigError(
                    source,
                    f"{where}.arms[{i}]",
                    f"model {arm.model!r} has no version {arm.version}",
                    hint=f"versions: {', '.join(map(str, versions)) or 'none'}",
                )

    def _open_started(self, config: ExperimentConfig, fields: dict[str, Any]) -> Experiment:
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        exp = Experiment.open(config, self.store_path)
        try:
            self._write_started({**self._started, config.name: fields})
        except OSError:
            exp.close()
            raise
        self._started[config.name] = fields
        return exp

    def _serve(self, exp: Experiment) -> Alias:
        exp.start(self.options.evaluate_seconds)
        alias = Alias(exp)
        self.router.unit_headers.add(exp.config.unit_header.encode())
        self.aliases[exp.name] = alias  # the last step: from here requests reach it
        return alias

    def _read_started(self) -> dict[str, dict[str, Any]]:
        path = self.started_path
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(str(path), None, f"cannot be read: {e}", hint="fix or delete the file") from None
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise ConfigError(str(path), None, "expected an object of experiment tables by name")
        return data

    def _write_started(self, started: Mapping[str, Any]) -> None:
        path = self.started_path
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(started, indent=1), encoding="utf-8")
        os.replace(partial, path)  # whole or not at all


def _summary(alias: Alias, source: str) -> dict[str, Any]:
    config = alias.experiment.config
    state = alias.experiment.state
    canary = config.mode == "canary"
    return {
        "name": alias.name,
        "mode": config.mode,
        "phase": state.phase,
        "step": state.step if canary else None,
        "share_percent": config.steps[state.step] if canary else None,
        "arms": [{"label": a.label, "model": a.model, "version": a.version, "weight": a.weight} for a in config.arms],
        "winner": state.winner,
        "unit_header": config.unit_header,
        "source": source,
    }


class ExperimentEndpoints:
    """What the /v2/experiments endpoints answer."""

    def __init__(self, experiments: Experiments, tokens: Tokens) -> None:
        self.experiments = experiments
        self.tokens = tokens

    async def list(self, authorization: str | None, cookie: str | None) -> Reply:
        try:
            require_dashboard(self.tokens, authorization, cookie)
        except LeanserveError as e:
            return error_reply(e)
        return json_reply({"experiments": self.experiments.summaries()})

    async def status(self, authorization: str | None, cookie: str | None, name: str) -> Reply:
        try:
            require_dashboard(self.tokens, authorization, cookie)
            alias = self.experiments.get(name)
        except LeanserveError as e:
            return error_reply(e)
        return await _status_reply(alias)

    async def start(self, authorization: str | None, body: bytes) -> Reply:
        try:
            require_admin(self.tokens, authorization)
            alias = await self.experiments.start(_json_object(body, "an experiment"))
        except LeanserveError as e:
            return error_reply(e)
        return await _status_reply(alias)

    async def act(self, authorization: str | None, name: str, action: str, body: bytes) -> Reply:
        """stop, promote (``{"arm": "model:version"}`` when several candidates) or rollback; ``reason`` optional."""
        try:
            require_admin(self.tokens, authorization)
            alias = self.experiments.get(name)
            doc = _json_object(body, f"a {action}", empty_ok=True)
            reason = doc.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise InvalidInput('"reason" must be a string')
            operator = f"by the operator{': ' + reason[:500] if reason else ''}"
            exp = alias.experiment
            if action == "promote":
                arm = _arm_named(alias, doc.get("arm"))
                await asyncio.to_thread(exp.promote, arm, f"promoted {operator}")
            elif action == "rollback":
                await asyncio.to_thread(exp.rollback, f"rolled back {operator}")
            else:
                await asyncio.to_thread(exp.stop, f"stopped {operator}")
        except LeanserveError as e:
            return error_reply(e)
        return await _status_reply(alias)

    def feedback(self, authorization: str | None, name: str, body: bytes) -> Reply:
        """``{"key": response id or unit, "reward": 1.0}``: buffered, written within 100 ms."""
        try:
            require_inference(self.tokens, authorization)
            alias = self.experiments.get(name)
            config = alias.experiment.config
            if not config.uses_feedback:
                raise InvalidInput(
                    f"experiment {name!r} decides on {config.primary_metric!r}, which takes no feedback",
                    hint='feedback counts for primary_metric = "reward" or "conversion"',
                )
            doc = _json_object(body, "feedback")
            key, reward = doc.get("key"), doc.get("reward", 1.0)
            if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
                raise InvalidInput(
                    f'feedback needs a "key" string of 1 to {MAX_KEY_CHARS} characters',
                    hint="the response id (the answer's id) or the unit the request carried",
                )
            if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
                raise InvalidInput(f'"reward" must be a finite number, got {str(reward)[:40]!r}')
            alias.recorder.flush()  # the response first: feedback must not reach the store before it
            alias.experiment.feedback(key, float(reward))
        except LeanserveError as e:
            return error_reply(e)
        return json_reply({"experiment": name, "key": key, "reward": float(reward)})


async def _status_reply(alias: Alias) -> Reply:
    alias.recorder.flush()  # up to the last request
    status = await asyncio.to_thread(alias.experiment.status)  # reads SQLite: off the event loop
    return Reply(200, orjson.dumps(status), headers=((b"cache-control", b"no-store"),))


def _json_object(body: bytes, what: str, empty_ok: bool = False) -> dict[str, Any]:
    if empty_ok and not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} must be a JSON object: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _arm_named(alias: Alias, label: object) -> Arm | None:
    """The arm a promote names (``model:version`` or its label), None for the one candidate."""
    if label is None:
        return None
    for arm in alias.arms:
        if label in (arm.label, f"{arm.model}:{arm.version}"):
            return arm
    raise InvalidInput(
        f"experiment {alias.name!r} has no arm {str(label)[:80]!r}",
        hint=f"arms: {', '.join(a.label for a in alias.arms)}",
    )


__all__ = ["ACTIONS", "ExperimentEndpoints", "ExperimentOptions", "Experiments"]
