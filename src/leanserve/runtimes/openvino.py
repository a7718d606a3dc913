"""OpenVINO: compile an IR (``.xml`` + ``.bin``) or an ONNX file for the CPU and run it.

``RuntimeOptions.providers`` says where and at which precision, as ``openvino[:DEVICE][:PRECISION]``:
``("openvino:CPU:bf16",)``, ``("openvino:f32",)``, ``("openvino",)``. The device defaults to CPU;
the precision is OpenVINO's INFERENCE_PRECISION_HINT (``f32``, ``bf16``, ``f16``), left to
OpenVINO when absent. ``intra_op_threads`` becomes INFERENCE_NUM_THREADS (0: OpenVINO decides).

This module imports openvino at the top; :func:`leanserve.runtimes.load_runtime` imports the
module only when a model asks for the openvino platform.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ..config import RuntimeOptions
from ..errors import ConfigError, InferenceFailed, InvalidInput
from ..protocol.datatypes import datatype_of
from . import EngineTensor

PRECISIONS: tuple[str, ...] = ("f32", "bf16", "f16")
_DEVICES: tuple[str, ...] = ("CPU", "GPU", "NPU", "AUTO")


@dataclass(frozen=True, slots=True)
class Target:
    device: str = "CPU"
    precision: str | None = None  # None: OpenVINO's default for the device


@cache
def core() -> ov.Core:
    # One Core per process: it owns the plugins and is safe to share between threads.
    return ov.Core()


def parse_providers(providers: Sequence[str], where: str = "runtime.providers") -> Target:
    """Read ``openvino[:DEVICE][:PRECISION]`` (case-insensitive); an empty tuple is the CPU default."""
    if not providers:
        return Target()
    if len(providers) > 1:
        raise ConfigError(
            where,
            None,
            f"OpenVINO takes one provider entry, got {list(providers)}",
            hint='e.g. providers = ["openvino:CPU:bf16"]',
        )
    parts = providers[0].split(":")
    if parts[0].lower() != "openvino":
        raise ConfigError(
            where,
            None,
            f"{providers[0]!r} is not an OpenVINO provider",
            hint='use "openvino[:DEVICE][:PRECISION]", e.g. "openvino:CPU:bf16"',
        )
    device, precision = "CPU", None
    for token in parts[1:]:
        if token.lower() in PRECISIONS:
            precision = token.lower()
        elif token.upper() in _DEVICES:
            device = token.upper()
        else:
            raise ConfigError(
                where,
                None,
                f"unknown OpenVINO device or precision {token!r}",
                hint=f"devices: {', '.join(_DEVICES)}; precisions: {', '.join(PRECISIONS)}",
            )
    return Target(device, precision)


def _tensor(port: Any) -> EngineTensor:
    shape = tuple(-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype())
    return EngineTensor(name=port.get_any_name(), datatype=datatype_of(np.empty(0, dtype)), shape=shape)


class OpenVinoRuntime:
    """One compiled OpenVINO model with one infer request."""

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        self._target = parse_providers(options.providers)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if options.intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = options.intra_op_threads
        if self._target.precision:
            config["INFERENCE_PRECISION_HINT"] = self._target.precision
        try:
            self._compiled = core().compile_model(str(path), self._target.device, config)
        except Exception as e:  # OpenVINO raises RuntimeError for everything
            raise ConfigError(str(path), None, f"OpenVINO cannot load the model: {e}") from e
        self._request = self._compiled.create_infer_request()
        # The request is stateful; the lock keeps one run at a time even if a caller slips.
        self._lock = threading.Lock()
        self._inputs = tuple(_tensor(p) for p in self._compiled.inputs)
        self._outputs = tuple(_tensor(p) for p in self._compiled.outputs)
        self._output_names = [t.name for t in self._outputs]
        self._input_names = {t.name for t in self._inputs}
        # Report what OpenVINO chose, not what was asked: with no hint it picks bf16 on CPUs
        # that have it.
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._providers = (f"openvino:{self._target.device}:{precision}",)

    @property
    def inputs(self) -> tuple[EngineTensor, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[EngineTensor, ...]:
        return self._outputs

    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(output_names) if output_names else self._output_names
        unknown = [n for n in [*inputs, *names] if n not in self._input_names and n not in self._output_names]
        if unknown:
            raise InvalidInput(f"unknown tensor(s) {', '.join(unknown)}")
        missing = sorted(self._input_names - set(inputs))
        if missing:
            raise InvalidInput(f"missing input(s) {', '.join(missing)}")
        try:
            with self._lock:
                # share_outputs=False copies the results out of the request's buffers, which
                # the next run overwrites.
                result = self._request.infer(dict(inputs), share_inputs=False, share_outputs=False)
                return {n: np.asarray(result[self._compiled.output(n)]) for n in names}
        except RuntimeError as e:
            text = str(e)
            if "shape" in text.lower() or "precision" in text.lower() or "type" in text.lower():
                raise InvalidInput(f"the model rejected the inputs: {text}") from e
            raise InferenceFailed(f"OpenVINO failed: {text}") from e

    def close(self) -> None:
        del self._request
        del self._compiled
