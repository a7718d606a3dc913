"""Accuracy-aware fallback: keep the nodes that hurt most in float, step by step.

When a fully quantized variant misses the budget, every quantized node is ranked by the
error it adds: the relative error of its output (quantized model against float model, on the
calibration split) minus the largest relative error among its inputs, i.e. the error that
appears at that node rather than flowing into it. Then the worst 1, 2, 4, 8, ... nodes are
excluded from quantization (``nodes_to_exclude``) until the variant fits the budget or stops
being faster than the float model.

Ranking runs both models with graph optimization disabled, so the quantized model executes
as float Q/DQ emulation with every intermediate tensor exposed; the noise it ranks is the
same the int8 kernels add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .data import Dataset
from .variants import BuiltVariant

# Op types dynamic quantization replaces with integer kernels (the node disappears by name).
_DYNAMIC_OPS = frozenset({"MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU", "Gather", "EmbedLayerNormalization"})
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# Activations the QDQ quantizer folds into the preceding node (the clipping of the quantized range).
_FOLDABLE = frozenset({"Relu", "Clip"})


@dataclass(frozen=True, slots=True)
class RankedNode:
    name: str
    op_type: str
    added_error: float  # relative L2 error appearing at this node's output


@dataclass(frozen=True, slots=True)
class Attempt:
    built: BuiltVariant
    score: float
    accepted: bool
    p50_ms: float


@dataclass(frozen=True, slots=True)
class FallbackStep:
    excluded: int
    score: float
    p50_ms: float
    accepted: bool


@dataclass(frozen=True, slots=True)
class FallbackReport:
    from_variant: str
    kept_in_float: tuple[RankedNode, ...]
    steps: tuple[FallbackStep, ...]
    outcome: str
    baseline_ms: float  # the float model's batch-1 median the variant must beat


def exclusion_steps(candidates: int, max_steps: int) -> list[int]:
    """How many of the worst nodes to keep in float at each step: 1, 2, 4, ... up to all."""
    steps: list[int] = []
    k = 1
    while k < candidates and len(steps) < max_steps - 1:
        steps.append(k)
        k *= 2
    if candidates and len(steps) < max_steps:
        steps.append(min(k, candidates))
    return steps


def quantized_nodes(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The float model's nodes that the quantizer turned into integer computation."""
    producers = {o: n for n in quant_model.graph.node for o in n.output}
    qnodes = {n.name: n for n in quant_model.graph.node}
    found = []
    for node in float_model.graph.node:
        if not node.name or node.op_type in _QDQ_OPS:
            continue
        q = qnodes.get(node.name)
        if q is not None:
            fed_by_dq = any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in q.input
            )
            if fed_by_dq:
                found.append(node)
        elif node.op_type in _DYNAMIC_OPS:
            found.append(node)
    return found


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    data: bytes = copy.SerializeToString()
    return data


def _run_all(model: bytes, data: Dataset, batch_size: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data.batches(batch_size):
        for name, value in zip(names, session.run(list(names), batch), strict=True):
            parts[name].append(np.asarray(value, dtype=np.float64).reshape(-1))
    return {n: np.concatenate(v) for n, v in parts.items()}


def _counterparts(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> Callable[[str], str | None]:
    """Maps a float tensor name to the quantized model's tensor holding the same value.

    The quantizer renames: a quantized activation ``t`` reaches its consumers as
    ``t_DequantizeLinear_Output`` (the value to compare, Q/DQ noise included), and a graph output
    keeps its name on the final DequantizeLinear.
    """
    tensors = {o for n in quant_model.graph.node for o in n.output} | {i.name for i in quant_model.graph.input}

    def find(name: str) -> str | None:
        for candidate in (f"{name}_DequantizeLinear_Output", name):
            if candidate in tensors:
                return candidate
        return None

    return find


def _node_output(
    node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], find: Callable[[str], str | None]
) -> tuple[str, str] | None:
    """The node's output and its quantized counterpart; an activation the quantizer folded into
    the node (Conv + Relu) is followed to the tensor after it."""
    name = node.output[0]
    for _ in range(4):
        found = find(name)
        if found is not None:
            return name, found
        after = consumers.get(name, [])
        if len(after) != 1 or after[0].op_type not in _FOLDABLE:
            return None
        name = after[0].output[0]
    return None


def rank_nodes(
    float_path: Path, quant_path: Path, data: Dataset, batch_size: int, examples: int = 16
) -> list[RankedNode]:
    """Quantized nodes, worst offender first."""
    fm, qm = onnx.load(str(float_path)), onnx.load(str(quant_path))
    nodes = quantized_nodes(fm, qm)
    if not nodes:
        return []
    find = _counterparts(fm, qm)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in fm.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {i.name for i in fm.graph.initializer}
    graph_inputs = {i.name for i in fm.graph.input}
    pairs: dict[str, str] = {}  # float tensor -> quantized counterpart
    outputs: dict[str, str] = {}  # node name -> float tensor standing for its output
    for n in nodes:
        out = _node_output(n, consumers, find)
        if out is None:
            continue
        outputs[n.name] = out[0]
        pairs[out[0]] = out[1]
        for i in n.input:
            q = find(i) if i and i not in initializers and i not in graph_inputs else None
            if q is not None:
                pairs[i] = q
    sample = data.take(np.arange(min(examples, len(data))))
    ref = _run_all(_with_outputs(fm, list(pairs)), sample, batch_size, list(pairs))
    got = _run_all(_with_outputs(qm, list(pairs.values())), sample, batch_size, list(pairs.values()))
    err: dict[str, float] = {}
    for f, q in pairs.items():
        if ref[f].shape == got[q].shape:
            err[f] = float(np.linalg.norm(got[q] - ref[f]) / (np.linalg.norm(ref[f]) + 1e-12))
    ranked = []
    for n in nodes:
        out_err = err.get(outputs.get(n.name, ""))
        if out_err is None:
            continue
        upstream = max((err.get(i, 0.0) for i in n.input), default=0.0)
        ranked.append(RankedNode(n.name, n.op_type, out_err - upstream))
    return sorted(ranked, key=lambda r: r.added_error, reverse=True)


def search(
    from_variant: str,
    ranking: Sequence[RankedNode],
    attempt: Callable[[Sequence[str]], Attempt],
    baseline_ms: float,
    max_steps: int = 6,
) -> tuple[FallbackReport, Attempt | None]:
    """Exclude more and more of the worst nodes; return the report and the first attempt that fits."""
    steps: list[FallbackStep] = []
    kept: tuple[RankedNode, ...] = ()
    for k in exclusion_steps(len(ranking), max_steps):
        kept = tuple(ranking[:k])
        a = attempt([n.name for n in kept])
        steps.append(FallbackStep(k, a.score, a.p50_ms, a.accepted))
        if a.p50_ms >= baseline_ms:
            outcome = (
                f"stopped: with {k} node(s) in float it takes {a.p50_ms:.3f} ms at batch 1, "
                f"no faster than the float model's {baseline_ms:.3f} ms"
            )
            return FallbackReport(from_variant, kept, tuple(steps), outcome, baseline_ms), None
        if a.accepted:
            outcome = f"fits the budget with {k} of {len(ranking)} quantized node(s) kept in float"
            return FallbackReport(from_variant, kept, tuple(steps), outcome, baseline_ms), a
    outcome = f"still outside the budget after {len(steps)} step(s)" if steps else "no quantized node to keep in float"
    return FallbackReport(from_variant, kept, tuple(steps), outcome, baseline_ms), None
