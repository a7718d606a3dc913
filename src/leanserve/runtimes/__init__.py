"""Engines that run a model file: the interface every engine implements, and how one is chosen.

The rest of leanserve (batcher, registry, optimizer) talks only to :class:`Runtime`; ONNX
Runtime is the default engine and OpenVINO a second one, imported lazily so that a user without
it still runs everything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import RuntimeOptions
from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """A tensor as the engine declares it: full shape, batch dimension included, -1 variable."""

    name: str
    datatype: str
    shape: tuple[int, ...]


class Runtime(Protocol):
    """A loaded model. ``run`` may be called from any one thread at a time."""

    @property
    def inputs(self) -> tuple[EngineTensor, ...]: ...

    @property
    def outputs(self) -> tuple[EngineTensor, ...]: ...

    @property
    def providers(self) -> tuple[str, ...]:
        """What actually executes the model (e.g. CPUExecutionProvider, openvino:CPU)."""
        ...

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def prime_engine(platform: str) -> None:
    """Pay an engine's one-time cost (its libraries, its global state) before any model is measured.

    Otherwise the first model to load is charged for the engine itself: measured on the reference
    machine, a model with 12 MiB of weights grew the process by 120 MiB when it was the first
    ONNX Runtime session, and by 40 MiB after one.
    """
    if platform == "onnxruntime":
        from .onnx import prime

        prime()
    elif platform == "openvino":
        from .openvino import core

        core()


# The engine threads of a model whose model.toml says ``intra_op_threads = 0``. Without it both
# engines take every core of the host, which is right for one process alone on a machine and
# wrong for several (``serve --workers N``, Ray replicas, a pod with a CPU limit): each would spin
# up a thread per host core. The launcher of such a process sets it to the process's share.
ENGINE_THREADS_ENV = "LEANSERVE_ENGINE_THREADS"


def default_engine_threads() -> int:
    """This process's share of cores (``$LEANSERVE_ENGINE_THREADS``), or 0: the engine decides."""
    raw = os.environ.get(ENGINE_THREADS_ENV, "").strip()
    return int(raw) if raw.isdigit() else 0


def load_runtime(path: Path, platform: str, options: RuntimeOptions) -> Runtime:
    """Load ``path`` with the engine named by ``platform``."""
    if not options.intra_op_threads and (threads := default_engine_threads()):
        options = replace(options, intra_op_threads=threads)
    if platform == "onnxruntime":
        from .onnx import OnnxRuntime

        return OnnxRuntime(path, options)
    if platform == "openvino":
        from .openvino import OpenVinoRuntime

        return OpenVinoRuntime(path, options)
    raise ConfigError(str(path), "platform", f"unknown platform {platform!r}")
