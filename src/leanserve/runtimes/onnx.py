"""ONNX Runtime: sessions, execution providers and threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, InvalidGraph

from ..config import RuntimeOptions
from ..errors import ConfigError, DeadlineExceeded, InferenceFailed, InvalidInput
from ..protocol.datatypes import datatype_from_onnx
from . import EngineTensor, default_engine_threads
from .threads import ThreadPlan, available_cores, plan_threads

# Preference order when the model does not name providers: the fastest one present wins.
_PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)

_GRAPH_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_providers() -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The providers to create a session with: the requested ones (all must exist), else the best present."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ConfigError(
                "runtime.providers",
                None,
                f"execution provider(s) {', '.join(missing)} not available here",
                hint=f"available: {', '.join(available)}",
            )
        return list(requested)
    chosen = [p for p in _PREFERRED_PROVIDERS if p in available]
    return chosen or ["CPUExecutionProvider"]


def thread_plan(options: RuntimeOptions) -> ThreadPlan:
    """The threads and spinning a session of ``options`` runs with (before its cost is measured).

    The cores are this process's share where a launcher set one (``serve --workers``, a Ray
    replica): its engine takes them all, so none is left over for its event loop.
    """
    cores = default_engine_threads() or available_cores()
    return plan_threads(None, cores, options.intra_op_threads, options.allow_spinning)


def resolved_options(options: RuntimeOptions) -> RuntimeOptions:
    """``options`` with the threads and spinning that will run: the user's, else the policy's first guess."""
    plan = thread_plan(options)
    return replace(options, intra_op_threads=plan.threads, allow_spinning=plan.spinning)


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    """ONNX Runtime's session options for ``options``: the ones a served model runs with (and a fair ceiling)."""
    plan = thread_plan(options)
    so = ort.SessionOptions()
    so.graph_optimization_level = _GRAPH_LEVELS[options.graph_optimization]
    so.intra_op_num_threads = plan.threads
    if options.inter_op_threads:
        so.inter_op_num_threads = options.inter_op_threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if plan.spinning else "0")
    if plan.spinning and plan.spin_microseconds is not None:
        so.add_session_config_entry("session.intra_op.spin_duration_us", str(plan.spin_microseconds))
    so.log_severity_level = 3
    return so


def _tensor(arg: ort.NodeArg) -> EngineTensor:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return EngineTensor(name=arg.name, datatype=datatype_from_onnx(arg.type), shape=shape)


class OnnxRuntime:
    """One ONNX Runtime inference session."""

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        providers = choose_providers(options.providers, available_providers())
        try:
            self._session = ort.InferenceSession(str(path), session_options(options), providers=providers)
        except Exception as e:  # ORT raises its own untyped exceptions for bad files
            raise ConfigError(str(path), None, f"ONNX Runtime cannot load the model: {e}") from e
        # What this session runs with, threads and spinning resolved (the registry may choose again).
        self.options = resolved_options(options)
        self._inputs = tuple(_tensor(a) for a in self._session.get_inputs())
        self._outputs = tuple(_tensor(a) for a in self._session.get_outputs())
        self._output_names = [t.name for t in self._outputs]
        self._string_inputs = {t.name for t in self._inputs if t.datatype == "BYTES"}
        # Kept, not asked for: a snapshot may read them while the registry closes the session.
        self._providers = tuple(self._session.get_providers())
        # On CPU alone, the binding's own run: ORT's Python run() only re-checks the feed's names
        # (the router validated them, and the binding refuses a missing input too) and falls back
        # between GPU providers. 1.5 us less per batch, measured on the tiny model (12.8 -> 11.3).
        binding = getattr(self._session, "_sess", None)
        cpu_only = self._providers == ("CPUExecutionProvider",)
        self._run: Callable[..., list[Any]] = binding.run if cpu_only and binding is not None else self._session.run
        self._timeout = options.timeout_ms / 1000.0

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
        # ONNX Runtime only reads the feed: it is copied only to convert string inputs in it.
        feed = dict(inputs) if self._string_inputs or type(inputs) is not dict else inputs
        for name in self._string_inputs & feed.keys() if self._string_inputs else ():
            # The protocol carries BYTES as bytes objects; ORT string tensors hold UTF-8 text only.
            try:
                feed[name] = np.vectorize(_to_str, otypes=[object])(feed[name])
            except UnicodeDecodeError as e:
                raise InvalidInput(
                    f"input {name!r}: BYTES element is not UTF-8 text ({e.reason} at byte {e.start})",
                    hint="ONNX Runtime string tensors carry text; encode binary payloads (e.g. base64)",
                ) from None
        if self._timeout:
            return self._run_with_timeout(names, feed)
        try:
            results = self._run(names, feed, None)
        except (InvalidArgument, InvalidGraph) as e:
            raise InvalidInput(f"the model rejected the inputs: {e}") from e
        except Exception as e:
            raise InferenceFailed(f"ONNX Runtime failed: {e}") from e
        return dict(zip(names, results, strict=True))

    def _run_with_timeout(self, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A run that ONNX Runtime cancels (between two operators) once ``runtime.timeout_ms`` has passed."""
        run_options = ort.RunOptions()
        timer = threading.Timer(self._timeout, setattr, (run_options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            results = self._session.run(names, feed, run_options)
        except (InvalidArgument, InvalidGraph) as e:
            raise InvalidInput(f"the model rejected the inputs: {e}") from e
        except Exception as e:
            if run_options.terminate:
                raise DeadlineExceeded(
                    f"the model's run took over runtime.timeout_ms ({self._timeout * 1000:g} ms) and was cancelled",
                    hint="send fewer rows per request, or raise runtime.timeout_ms in model.toml",
                ) from e
            raise InferenceFailed(f"ONNX Runtime failed: {e}") from e
        finally:
            timer.cancel()
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        # ORT frees the session with its last reference (the bound run holds one too).
        del self._session
        del self._run


def prime() -> None:
    """Create and run one trivial session, so ONNX Runtime's one-time set-up happens now."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "prime",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1, np.float32)})


def _to_str(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
