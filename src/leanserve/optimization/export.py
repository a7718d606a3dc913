"""Export a PyTorch module (or a ``torch.export`` program) to one ONNX file, and check it against PyTorch.

The one exporter of leanserve: ``optimize`` uses it for a live module or a .pt2 program, the demo
for its models. The dynamo exporter is tried first; when it fails the TorchScript exporter is
used instead, and the progress callback says so and why. torch is imported only when a model is
exported, so that a user optimizing an ONNX file never pays for it.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx

from ..errors import UsageError

if TYPE_CHECKING:
    import onnx_ir

DEFAULT_OPSET = 18
Exporter = Literal["dynamo", "torchscript"]


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """The ONNX file's tensor names, the axes that stay variable, and the opset."""

    # One name per example input, in order; empty: the exporter names them (dynamo names them
    # after forward()'s parameters, TorchScript input_0, input_1, ...).
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()  # empty: the exporter names them
    # tensor name (input or output) -> {axis: dimension name}; the same name is the same size
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    opset: int = DEFAULT_OPSET


def batch_spec(module: Any, inputs: int) -> ExportSpec:
    """Every input of ``module`` batched along axis 0, named after forward()'s parameters.

    Both exporters then give the same names, the ones dynamo gives, so that a user's data keyed
    by those names fits whichever exporter succeeded.
    """
    try:
        parameters = inspect.signature(module.forward).parameters.values()
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # a forward() without a signature Python can read
        positional = []
    names = tuple(positional[:inputs]) if len(positional) >= inputs else tuple(f"input_{i}" for i in range(inputs))
    return ExportSpec(input_names=names, dynamic_axes={name: {0: "batch"} for name in names})


def export_onnx(
    model: Any,
    example_inputs: tuple[Any, ...],
    path: Path,
    spec: ExportSpec,
    progress: Callable[[str], None] | None = None,
) -> Exporter:
    """Write ``model`` (a torch.nn.Module, or a torch.export.ExportedProgram with no example
    inputs) to ``path`` as one ONNX file; returns the exporter that succeeded.

    UsageError when neither exporter can export it, or when the file fixed a dimension that
    ``spec`` says is variable.
    """
    import torch

    say = progress or (lambda _message: None)
    is_program = isinstance(model, torch.export.ExportedProgram)
    if spec.input_names and len(spec.input_names) != len(example_inputs):
        raise ValueError(f"{len(spec.input_names)} input names for {len(example_inputs)} example inputs")
    if not is_program:
        model.eval()
    try:
        _export_dynamo(model, example_inputs, path, spec)
        exporter: Exporter = "dynamo"
    except Exception as e:
        first = f"{type(e).__name__}: {_first_line(e)}"
        if is_program:
            raise UsageError(f"the ONNX exporter cannot export this program: {first}") from e
        say(f"the dynamo ONNX exporter failed ({first}); falling back to the TorchScript exporter")
        path.unlink(missing_ok=True)
        try:
            _export_torchscript(model, example_inputs, path, spec)
        except Exception as e2:
            raise UsageError(
                f"neither ONNX exporter can export {type(model).__name__}: dynamo said {first}; "
                f"TorchScript said {type(e2).__name__}: {_first_line(e2)}",
                hint="check the installed torch, onnx and onnxscript versions, or export the model to ONNX yourself",
            ) from e2
        exporter = "torchscript"
    check_dynamic_axes(path, spec)
    return exporter


def _export_dynamo(model: Any, example_inputs: tuple[Any, ...], path: Path, spec: ExportSpec) -> None:
    import torch

    dims: dict[str, torch.export.Dim] = {}
    # Positional, one entry per example input: the names in spec need not be forward()'s own.
    dynamic_shapes = (
        tuple(
            {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in spec.dynamic_axes[name].items()}
            if name in spec.dynamic_axes
            else None
            for name in spec.input_names
        )
        if spec.input_names and not isinstance(model, torch.export.ExportedProgram)
        else None
    )
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model,
            example_inputs,
            None,
            input_names=list(spec.input_names) or None,
            output_names=list(spec.output_names) or None,
            dynamic_shapes=dynamic_shapes,
            opset_version=spec.opset,
            dynamo=True,
            external_data=False,
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


def _export_torchscript(model: Any, example_inputs: tuple[Any, ...], path: Path, spec: ExportSpec) -> None:
    import torch

    input_names = list(spec.input_names) or [f"input_{i}" for i in range(len(example_inputs))]
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            example_inputs,
            str(path),
            input_names=input_names,
            output_names=list(spec.output_names) or None,
            dynamic_axes={name: dict(axes) for name, axes in spec.dynamic_axes.items()},
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
                raise UsageError(
                    f"{path}: axis {axis} of {value.name!r} was exported as fixed size {dim.dim_value}",
                    hint="export with example inputs whose dynamic dimensions are larger than 1",
                )


def compare_with_torch(path: Path, module: Any, feeds: Sequence[Mapping[str, np.ndarray]], spec: ExportSpec) -> float:
    """The largest absolute difference between onnxruntime and PyTorch over ``feeds``, every output."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = list(spec.input_names) or [i.name for i in session.get_inputs()]
    worst = 0.0
    module.eval()
    for feed in feeds:
        got = session.run(list(spec.output_names) or None, dict(feed))
        with torch.no_grad():
            expected = module(*(torch.from_numpy(feed[name]) for name in names))
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
