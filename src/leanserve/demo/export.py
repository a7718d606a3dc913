"""Export a PyTorch module to ONNX with dynamic dimensions, and check the result against PyTorch.

The dynamo exporter is tried first; when it fails the TorchScript exporter is used instead,
and the progress callback says so and why.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch

from ..errors import ServerError
from .progress import Progress

if TYPE_CHECKING:
    import onnx_ir

DEFAULT_OPSET = 18


@dataclass(frozen=True, slots=True)
class ExportSpec:
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # tensor name (input or output) -> {axis: dimension name}; the same name is the same size
    dynamic_axes: dict[str, dict[int, str]]
    opset: int = DEFAULT_OPSET


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    spec: ExportSpec,
    progress: Progress,
) -> str:
    """Write ``module`` to ``path`` as one ONNX file; returns the exporter used ("dynamo" or "torchscript")."""
    module.eval()
    try:
        _export_dynamo(module, example_inputs, path, spec)
        exporter = "dynamo"
    except Exception as e:
        progress(
            f"the dynamo ONNX exporter failed ({type(e).__name__}: {_first_line(e)}); "
            "falling back to the TorchScript exporter"
        )
        path.unlink(missing_ok=True)
        try:
            _export_torchscript(module, example_inputs, path, spec)
        except Exception as e2:
            raise ServerError(
                f"cannot export {type(module).__name__} to ONNX: {type(e2).__name__}: {_first_line(e2)}",
                hint="check the installed torch, onnx and onnxscript versions",
            ) from e2
        exporter = "torchscript"
    check_dynamic_axes(path, spec)
    return exporter


def _export_dynamo(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, spec: ExportSpec
) -> None:
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {
        name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in spec.dynamic_axes[name].items()}
        for name in spec.input_names
        if name in spec.dynamic_axes
    }
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module,
            example_inputs,
            None,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=spec.opset,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("the exporter returned no program")
    _rename_shadowing_values(program.model.graph, spec.output_names)
    program.save(str(path), external_data=False)


def _rename_shadowing_values(graph: onnx_ir.Graph, output_names: Sequence[str]) -> None:
    # The dynamo exporter names intermediate values after the ops that produce them, so an
    # output called "embedding" collides with the word-embedding Gather; onnxruntime then
    # rejects the file for defining a name twice. Renaming the intermediate value is safe:
    # values are linked by object in the IR, and names only matter once saved.
    outputs = {id(v) for v in graph.outputs}
    names = set(output_names)
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name in names and id(value) not in outputs:
                value.name = f"{value.name}__intermediate"


def _export_torchscript(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, spec: ExportSpec
) -> None:
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes=spec.dynamic_axes,
            opset_version=spec.opset,
            dynamo=False,
        )


def check_dynamic_axes(path: Path, spec: ExportSpec) -> None:
    """Fail when the file fixed a dimension that should stay variable (the exporter specialized it)."""
    model = onnx.load(str(path), load_external_data=False)
    for value in [*model.graph.input, *model.graph.output]:
        for axis in spec.dynamic_axes.get(value.name, {}):
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.HasField("dim_value"):
                raise ServerError(
                    f"{path}: axis {axis} of {value.name!r} was exported as fixed size {dim.dim_value}",
                    hint="export with example inputs whose dynamic dimensions are larger than 1",
                )


def compare_with_torch(
    path: Path, module: torch.nn.Module, feeds: Sequence[dict[str, np.ndarray]], spec: ExportSpec
) -> float:
    """The largest absolute difference between onnxruntime and PyTorch over ``feeds``, every output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    module.eval()
    for feed in feeds:
        got = session.run(list(spec.output_names), feed)
        with torch.no_grad():
            expected = module(*(torch.from_numpy(feed[name]) for name in spec.input_names))
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        for g, e in zip(got, expected, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(g) - e.numpy()))))
    return worst


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and log lines; failures still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "no message"
