"""A model's ``handler.py``: batch-level ``preprocess`` and ``postprocess``, imported at load time.

The file is operator-trusted code from the model repository, as Triton's Python backend is: it
runs inside the server with the server's rights. It is imported when a version loads (on the
loader thread), from the model's own folder, never from anything a request carries.

The contract, both functions optional::

    def preprocess(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]: ...
    def postprocess(outputs: list[dict[str, np.ndarray]], requests: list[dict[str, np.ndarray]])
        -> list[dict[str, np.ndarray]]: ...

Each receives the whole dynamic batch, one dict per request (its tensors, first dimension its
rows), and returns one dict per request, in order: ``preprocess`` the engine's inputs,
``postprocess`` the tensors the client receives (``requests`` are the inputs as the client sent
them). Raise :class:`leanserve.InvalidInput` for the caller's mistake (a 400 for that request);
anything else is a 500 for the requests it concerns, logged with the request id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..config import HandlerConfig, ModelConfig
from ..errors import ConfigError

Tensors = dict[str, np.ndarray]
BatchFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Handler:
    """The functions a version's handler file defines (None where it defines none)."""

    path: Path
    preprocess: BatchFunction | None
    postprocess: BatchFunction | None
    module: ModuleType

    def function(self, name: str) -> BatchFunction:
        """A pipeline step's function, by name."""
        fn = getattr(self.module, name, None)
        if not callable(fn):
            raise ConfigError(str(self.path), None, f"defines no function {name!r}, which a pipeline step names")
        return fn  # type: ignore[no-any-return]


def handler_config(config: ModelConfig, model_dir: Path) -> HandlerConfig | None:
    """The model's ``[handler]`` table; a ``handler.py`` without one gets the defaults."""
    if config.handler is not None:
        return config.handler
    return HandlerConfig() if (model_dir / "handler.py").is_file() else None


def needs_processing(config: ModelConfig, model_dir: Path) -> bool:
    """Whether requests go through :mod:`leanserve.processing` rather than straight to the batcher."""
    return config.ragged or handler_config(config, model_dir) is not None


def load_handler(model_dir: Path, version: int, hc: HandlerConfig) -> Handler | None:
    """Import the handler file (None when the model has none: only ``[handler]`` tensors or steps)."""
    path = model_dir / hc.file
    if not path.is_file():
        if hc.file != "handler.py" or hc.inputs or hc.outputs:
            raise ConfigError(str(path), None, "not found, but model.toml's [handler] needs it")
        return None
    # A unique module name per file content: a hot swap imports the new file beside the old one.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    name = f"leanserve_handler_{_identifier(model_dir.name)}_v{version}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(str(path), None, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside the handler look themselves up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ConfigError(str(path), None, f"failed to import: {type(e).__name__}: {e}") from e
    pre = _function(module, "preprocess", 1, path)
    post = _function(module, "postprocess", 2, path)
    return Handler(path, pre, post, module)


def _function(module: ModuleType, name: str, most: int, path: Path) -> BatchFunction | None:
    fn: BatchFunction | None = getattr(module, name, None)
    if fn is None:
        return None
    if not callable(fn):
        raise ConfigError(str(path), name, "must be a function")
    try:
        required = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return fn  # a builtin without a signature: trust it
    if not 1 <= len(required) <= most:
        raise ConfigError(
            str(path), name, f"must take {'one argument' if most == 1 else 'one or two arguments'} (the batch)"
        )
    if most == 2 and len(required) == 1:
        return lambda outputs, requests: fn(outputs)
    return fn


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def as_tensors(value: object, where: str) -> Tensors:
    """A handler's dict for one request, its values as arrays (TypeError when it is no dict)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} returned {type(value).__name__} for a request, expected a dict of arrays")
    return {str(k): v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in value.items()}


__all__ = ["Handler", "as_tensors", "handler_config", "load_handler", "needs_processing"]
