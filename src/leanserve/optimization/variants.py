"""The variants: each a real, different model file built from the source ONNX model.

* ``ort-fp32-opt``: ONNX Runtime's full graph optimization, saved offline (fused, laid out for
  this CPU), so serving loads it without optimizing again.
* ``ort-int8-dynamic*``: weights int8, activations quantized at run time (no calibration).
* ``ort-int8-static-*``: int8 QDQ, calibrated on the calibration split (MinMax, Percentile,
  Entropy; per-tensor ``-pt`` or per-channel ``-pc`` weights).
* ``ort-fp16``: half precision, only where a GPU execution provider exists.
* ``ov-*``: OpenVINO IR run by OpenVINO: fp32, bf16 (fp16-stored weights, bf16 inference),
  int8 (the best static QDQ model, which OpenVINO runs with int8 kernels), and int8-weights
  (NNCF's int8 weight compression; OpenVINO's CPU plugin then quantizes the activations of
  each MatMul at run time in groups of 32 values, which keeps transformers accurate where one
  scale per tensor, as ORT's dynamic int8 uses, does not).

OpenVINO and NNCF are imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from ..config import RuntimeOptions
from ..errors import UsageError
from .data import Dataset

# Values per activation scale when OpenVINO quantizes activations at run time for int8 weights.
# 32 is OpenVINO's CPU default and the most accurate setting that runs the int8 kernels.
DYNAMIC_QUANTIZATION_GROUP = 32

# How a variant is made; provenance and report.json record it as "method".
# Loggers of the quantizers and converters: their warnings (per-channel axes of LayerNorm
# weights, NNCF's statistics) say nothing actionable to a user of optimize.
_QUIET_LOGGERS = ("onnxruntime", "nncf", "openvino")
# ONNX Runtime's quantizer also warns through logging.warning(), on the root logger itself.
_ORT_DIR = str(Path(ort.__file__).resolve().parent)

Method = Literal["ort-optimized", "int8-dynamic", "int8-static", "fp16", "openvino"]
Calibration = Literal["minmax", "percentile", "entropy"]


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    method: Method
    per_channel: bool = False
    op_types: tuple[str, ...] = ()  # empty: every op type the quantizer knows
    calibration: Calibration | None = None
    precision: Literal["f32", "bf16", "int8", "int8-weights"] | None = None  # OpenVINO only

    @property
    def platform(self) -> str:
        return "openvino" if self.method == "openvino" else "onnxruntime"

    @property
    def family(self) -> str:
        """The variants whose models one quantizer makes share a family, and the family shares a
        fallback: the node-exclusion search runs once per family. A family is named after the
        method of that quantizer; ov-int8 is made by converting the static QDQ model, so its
        method is openvino but its family is int8-static.
        """
        return "int8-static" if self.precision == "int8" else self.method


CATALOG: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        VariantSpec("ort-fp32-opt", "ort-optimized"),
        VariantSpec("ort-int8-dynamic", "int8-dynamic"),
        VariantSpec("ort-int8-dynamic-pc", "int8-dynamic", per_channel=True),
        VariantSpec("ort-int8-dynamic-matmul-pc", "int8-dynamic", per_channel=True, op_types=("MatMul",)),
        VariantSpec("ort-int8-static-minmax-pt", "int8-static", calibration="minmax"),
        VariantSpec("ort-int8-static-minmax-pc", "int8-static", per_channel=True, calibration="minmax"),
        VariantSpec("ort-int8-static-percentile-pt", "int8-static", calibration="percentile"),
        VariantSpec("ort-int8-static-percentile-pc", "int8-static", per_channel=True, calibration="percentile"),
        VariantSpec("ort-int8-static-entropy-pt", "int8-static", calibration="entropy"),
        VariantSpec("ort-int8-static-entropy-pc", "int8-static", per_channel=True, calibration="entropy"),
        VariantSpec("ort-fp16", "fp16"),
        VariantSpec("ov-fp32", "openvino", precision="f32"),
        VariantSpec("ov-bf16", "openvino", precision="bf16"),
        VariantSpec("ov-int8", "openvino", precision="int8"),
        VariantSpec("ov-int8-weights", "openvino", precision="int8-weights"),
    )
}
# Entropy calibration is slow on large activations and rarely beats Percentile; ask for it.
DEFAULT_VARIANTS: tuple[str, ...] = tuple(n for n in CATALOG if "entropy" not in n)
# Percentile calibration without per-channel weights, and per-channel dynamic on every op type,
# are the two most often dominated; the quick set leaves them out.
QUICK_VARIANTS: tuple[str, ...] = tuple(
    n for n in DEFAULT_VARIANTS if n not in ("ort-int8-static-percentile-pt", "ort-int8-dynamic-pc")
)


def select(names: Sequence[str] | None, quick: bool) -> list[VariantSpec]:
    if not names:
        return [CATALOG[n] for n in (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)]
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise UsageError(f"unknown variant(s) {', '.join(unknown)}", hint=f"known: {', '.join(CATALOG)}")
    return [CATALOG[n] for n in dict.fromkeys(names)]


@dataclass(frozen=True, slots=True)
class BuiltVariant:
    name: str
    spec: VariantSpec
    model_file: Path
    files: tuple[Path, ...]  # everything the version folder needs (an IR is .xml + .bin)
    runtime: RuntimeOptions
    conversion_s: float
    settings: dict[str, Any] = field(default_factory=dict)  # how it was made, for provenance


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def openvino_has_bf16() -> bool:
    from ..runtimes.openvino import core

    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def unavailable(spec: VariantSpec) -> str | None:
    """Why ``spec`` cannot be built on this machine, or None."""
    if spec.method == "fp16" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no GPU execution provider here (fp16 pays off only on a GPU)"
    if spec.method == "openvino":
        if not openvino_available():
            return "openvino is not installed (pip install 'leanserve[optimize]')"
        if spec.precision == "bf16" and not openvino_has_bf16():
            return "this CPU has no bf16 support"
        if spec.precision == "int8-weights" and not nncf_available():
            return "nncf is not installed (pip install 'leanserve[optimize]')"
    return None


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence a quantizer or converter for the duration of one call.

    Their progress lines on stdout would corrupt the CLI's ``--json`` output, and their warnings
    say nothing a user can act on. Only their own loggers and records are muted, and only during
    the call, so a server that runs optimize keeps its logging. stdout itself is one object per
    process: whatever another thread prints during the call is lost with the quantizer's lines.
    """
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    root.addFilter(_not_from_onnxruntime)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(_not_from_onnxruntime)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _not_from_onnxruntime(record: logging.LogRecord) -> bool:
    """Keep a record on the root logger unless ONNX Runtime's code logged it below ERROR."""
    return record.levelno >= logging.ERROR or not record.pathname.startswith(_ORT_DIR)


class _Reader:
    """Feeds the calibration split to ORT's calibrator, a batch at a time."""

    def __init__(self, data: Dataset, batch_size: int) -> None:
        # Equal batches only: the histogram calibrators (Percentile, Entropy) stack what they
        # collect and fail on a shorter last batch, so the remainder is left out.
        usable = len(data) - len(data) % batch_size if len(data) >= batch_size else len(data)
        self._batches = iter(list(data.take(np.arange(usable)).batches(batch_size)))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # some calibrators call it; a fresh reader is built per variant
        pass


class Builder:
    """Builds variant files from one source model into ``workdir``."""

    def __init__(self, source: Path, workdir: Path, calibration: Dataset, dynamic_batch: bool) -> None:
        self.source = source
        self.workdir = workdir
        self.calibration = calibration
        self.calibration_batch = 16 if dynamic_batch else 1
        self._prepared: tuple[Path, str] | None = None

    def prepared(self) -> tuple[Path, str]:
        """The source after ORT's quantization pre-processing, and a note on how it went."""
        if self._prepared is None:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            out = (self.workdir / "prepared.onnx").resolve()
            source = self.source.resolve()
            note = "quant_pre_process"
            # When symbolic shape inference fails, ONNX Runtime saves its half-inferred model
            # (sym_shape_infer_temp.onnx plus the weights, 90 MB for MiniLM) into the current
            # directory and leaves it there; run it where that litter is ours to clean up.
            with contextlib.chdir(self.workdir):
                try:
                    with _quiet_quantizer():
                        quant_pre_process(str(source), str(out))
                except Exception:
                    # Symbolic shape inference fails on some exporter output (dynamo MiniLM); ONNX
                    # shape inference alone is enough for the quantizer.
                    try:
                        with _quiet_quantizer():
                            quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
                        note = "quant_pre_process (symbolic shape inference skipped: it failed)"
                    except Exception as e:
                        shutil.copyfile(source, out)
                        note = f"no pre-processing (quant_pre_process failed: {type(e).__name__})"
            self._prepared = (out, note)
        return self._prepared

    def build(
        self,
        spec: VariantSpec,
        *,
        nodes_to_exclude: Sequence[str] = (),
        qdq_model: Path | None = None,
        name: str | None = None,
    ) -> BuiltVariant:
        name = name or spec.name
        folder = self.workdir / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return self._build(spec, folder, name, time.perf_counter(), nodes_to_exclude, qdq_model)

    def _build(
        self,
        spec: VariantSpec,
        folder: Path,
        name: str,
        t0: float,
        nodes_to_exclude: Sequence[str],
        qdq_model: Path | None,
    ) -> BuiltVariant:
        settings: dict[str, Any] = {"method": spec.method}
        runtime = RuntimeOptions()
        if spec.method == "ort-optimized":
            model = folder / "model.onnx"
            self._ort_optimized(model)
            settings["graph_optimization"] = "all, saved offline for this CPU"
            # The file is already optimized: loading it need not optimize again.
            runtime = RuntimeOptions(graph_optimization="disabled")
            files: tuple[Path, ...] = (model,)
        elif spec.method == "int8-dynamic":
            model = folder / "model.onnx"
            settings |= self._dynamic(spec, model, nodes_to_exclude)
            files = (model,)
        elif spec.method == "int8-static":
            model = folder / "model.onnx"
            settings |= self._static(spec, model, nodes_to_exclude)
            files = (model,)
        elif spec.method == "fp16":
            model = folder / "model.onnx"
            self._fp16(model)
            settings["keep_io_types"] = True
            runtime = RuntimeOptions(providers=("CUDAExecutionProvider",))
            files = (model,)
        elif spec.precision == "int8-weights":
            model = folder / "model.xml"
            settings |= self._openvino_int8_weights(model)
            runtime = RuntimeOptions(providers=("openvino:CPU:f32",))
            files = (model, model.with_suffix(".bin"))
        else:
            model = folder / "model.xml"
            src = qdq_model if spec.precision == "int8" else self.source
            if src is None:
                raise ValueError("ov-int8 needs the static QDQ model it converts")
            self._openvino(src, model, compress_to_fp16=spec.precision == "bf16")
            precision = "bf16" if spec.precision == "bf16" else "f32"
            runtime = RuntimeOptions(providers=(f"openvino:CPU:{precision}",))
            settings |= {
                "inference_precision": precision,
                "weights": "fp16" if precision == "bf16" else "fp32",
            }
            if spec.precision == "int8":
                settings["converted_from"] = qdq_model.parent.name if qdq_model else ""
            files = (model, model.with_suffix(".bin"))
        return BuiltVariant(
            name=name,
            spec=spec,
            model_file=model,
            files=files,
            runtime=runtime,
            conversion_s=time.perf_counter() - t0,
            settings=settings,
        )

    def _ort_optimized(self, out: Path) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        ort.InferenceSession(str(self.source), so, providers=["CPUExecutionProvider"])

    def _dynamic(self, spec: VariantSpec, out: Path, exclude: Sequence[str]) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        prepared, note = self.prepared()
        with _quiet_quantizer():
            quantize_dynamic(
                str(prepared),
                str(out),
                per_channel=spec.per_channel,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(spec.op_types) or None,
                nodes_to_exclude=list(exclude) or None,
            )
        return {
            "weights": "int8",
            "activations": "uint8, quantized at run time",
            "per_channel": spec.per_channel,
            "op_types": list(spec.op_types) or "all",
            "nodes_to_exclude": list(exclude),
            "preprocess": note,
        }

    def _static(self, spec: VariantSpec, out: Path, exclude: Sequence[str]) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        prepared, note = self.prepared()
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[spec.calibration or "minmax"]
        with _quiet_quantizer():
            quantize_static(
                str(prepared),
                str(out),
                _Reader(self.calibration, self.calibration_batch),
                quant_format=QuantFormat.QDQ,
                per_channel=spec.per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=list(exclude) or None,
                op_types_to_quantize=list(spec.op_types) or None,
            )
        return {
            "format": "QDQ",
            "weights": "int8",
            "activations": "int8",
            "calibration": spec.calibration,
            "per_channel": spec.per_channel,
            "calibration_examples": len(self.calibration),
            "calibration_batch": self.calibration_batch,
            "nodes_to_exclude": list(exclude),
            "preprocess": note,
        }

    def _fp16(self, out: Path) -> None:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with _quiet_quantizer():
            model = convert_float_to_float16(onnx.load(str(self.source)), keep_io_types=True)
        onnx.save(model, str(out))

    def _openvino(self, src: Path, out: Path, compress_to_fp16: bool) -> None:
        import openvino as ov

        with _quiet_quantizer():
            model = ov.convert_model(str(src))
        ov.save_model(model, str(out), compress_to_fp16=compress_to_fp16)

    def _openvino_int8_weights(self, out: Path) -> dict[str, Any]:
        import nncf
        import openvino as ov

        with _quiet_quantizer():
            model = nncf.compress_weights(ov.convert_model(str(self.source)), mode=nncf.CompressWeightsMode.INT8_SYM)
        # The CPU plugin reads runtime options from the IR; pinning the group size there keeps the
        # file running as it was measured even if OpenVINO's default changes.
        model.set_rt_info(str(DYNAMIC_QUANTIZATION_GROUP), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
        ov.save_model(model, str(out), compress_to_fp16=False)
        return {
            "weights": "int8, symmetric, one scale per output channel (NNCF compress_weights INT8_SYM)",
            "activations": f"int8, quantized at run time in groups of {DYNAMIC_QUANTIZATION_GROUP} values",
            "inference_precision": "f32",
            "compressed_weights": sum(
                op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in model.get_ops()
            ),
        }
