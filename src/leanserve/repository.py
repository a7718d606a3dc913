"""The model repository (Triton's layout): ``<repo>/<model>/[model.toml]`` and ``<repo>/<model>/<version>/<file>``.

Discovery never fails as a whole: a model whose configuration is wrong comes back with its
error, and the others load. Whatever ``model.toml`` leaves out is completed from the model
file (Triton's auto-complete); whatever it declares is checked against the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ModelConfig, TensorSpec, load_model_config, version_number
from .errors import ConfigError, InvalidInput, LeanserveError

# When every input and output has a variable first dimension the model can batch; this is the
# batch limit assumed until model.toml or `leanserve optimize` says better.
DEFAULT_MAX_BATCH_SIZE = 32
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")


@dataclass(frozen=True, slots=True)
class ModelVersionSpec:
    """One version ready to load: its file and its completed configuration."""

    name: str
    version: int
    path: Path
    config: ModelConfig


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    directory: Path
    config: ModelConfig | None
    versions: tuple[int, ...]  # selected by the version policy, ascending
    error: ConfigError | None = None


@dataclass(frozen=True, slots=True)
class RepositoryScan:
    root: Path
    models: tuple[ModelEntry, ...]

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return tuple(m.error for m in self.models if m.error is not None)


def safe_model_name(name: str) -> str:
    """``name`` if it is a plain model name; anything that could leave the repository is refused."""
    if not name or "\x00" in name or "/" in name or "\\" in name or name.startswith(".") or not _NAME.match(name):
        raise InvalidInput(
            f"invalid model name {name[:80]!r}",
            hint="model names are letters, digits, '_', '-' and '.', not starting with '.'",
        )
    return name


def version_folders(directory: Path) -> list[int]:
    """The versions present under a model folder, ascending."""
    return sorted(number for p in directory.iterdir() if p.is_dir() and (number := version_number(p.name)) is not None)


def scan_repository(root: Path, names_only: bool = False) -> RepositoryScan:
    """Every model folder under ``root`` with its configuration, or the error that stops it.

    ``names_only`` lists the model folders without reading their configurations.
    """
    if not root.is_dir():
        raise ConfigError(str(root), None, "is not a directory", hint="pass the model repository folder")
    entries: list[ModelEntry] = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            safe_model_name(directory.name)
        except InvalidInput:
            continue  # not a model folder (e.g. __pycache__-like or odd names)
        entries.append(ModelEntry(directory.name, directory, None, ()) if names_only else scan_model(directory))
    return RepositoryScan(root, tuple(entries))


def scan_model(directory: Path) -> ModelEntry:
    """One model folder: its configuration and the versions its policy selects, or the error that stops it."""
    try:
        config = load_model_config(directory)
        available = version_folders(directory)
        if not available:
            raise ConfigError(str(directory), None, "has no version folder", hint="put the model in <model>/1/")
        versions = tuple(config.version_policy.select(available))
        if not versions:
            raise ConfigError(
                config.source or str(directory),
                "version_policy",
                f"selects none of the versions present ({', '.join(map(str, available))})",
            )
        if config.default_version is not None and config.default_version not in versions:
            raise ConfigError(
                config.source or str(directory),
                "default_version",
                f"version {config.default_version} is not among the loaded versions {list(versions)}",
            )
        return ModelEntry(directory.name, directory, config, versions)
    except ConfigError as e:
        return ModelEntry(directory.name, directory, None, (), e)


def model_fingerprint(directory: Path) -> tuple[object, ...] | None:
    """What changes when a model's files change (model.toml, version folders, their files); None if gone.

    Names, sizes and modification times: cheap enough to poll every second, and a replaced file
    changes at least its time.
    """
    if not directory.is_dir():
        return None
    items: list[tuple[str, int, int]] = []
    try:
        for path in sorted(directory.iterdir()):
            if path.is_dir():
                for child in sorted(path.iterdir()):
                    stat = child.stat()
                    items.append((f"{path.name}/{child.name}", stat.st_size, stat.st_mtime_ns))
            else:
                stat = path.stat()
                items.append((path.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ("unreadable",)
    return tuple(items)


def read_signature(path: Path, platform: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs as the model file declares them: full shapes, batch dimension included."""
    if not path.is_file():
        raise ConfigError(str(path), None, "model file not found")
    if platform == "onnxruntime" and path.suffix == ".onnx":
        return _onnx_signature(path)
    from .config import RuntimeOptions
    from .runtimes import load_runtime

    runtime = load_runtime(path, platform, RuntimeOptions())
    try:
        return (
            tuple(TensorSpec(t.name, t.datatype, t.shape) for t in runtime.inputs),
            tuple(TensorSpec(t.name, t.datatype, t.shape) for t in runtime.outputs),
        )
    finally:
        runtime.close()


def _onnx_signature(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import onnx

    from .protocol.datatypes import datatype_from_onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a bad file
        raise ConfigError(str(path), None, f"is not a readable ONNX model: {e}") from e
    initializers = {i.name for i in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        t = value.type.tensor_type
        elem = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None
        onnx_type = "tensor(string)" if t.elem_type == onnx.TensorProto.STRING else _onnx_type_name(elem)
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
        try:
            datatype = datatype_from_onnx(onnx_type)
        except LeanserveError as e:
            raise ConfigError(str(path), value.name, e.message) from None
        return TensorSpec(value.name, datatype, dims)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in model.graph.output)
    return inputs, outputs


def _onnx_type_name(dtype: object) -> str:
    import numpy as np

    names = {
        np.dtype(np.bool_): "bool",
        np.dtype(np.uint8): "uint8",
        np.dtype(np.uint16): "uint16",
        np.dtype(np.uint32): "uint32",
        np.dtype(np.uint64): "uint64",
        np.dtype(np.int8): "int8",
        np.dtype(np.int16): "int16",
        np.dtype(np.int32): "int32",
        np.dtype(np.int64): "int64",
        np.dtype(np.float16): "float16",
        np.dtype(np.float32): "float",
        np.dtype(np.float64): "double",
    }
    return f"tensor({names.get(dtype, str(dtype))})"  # type: ignore[call-overload]


def resolve_version(directory: Path, config: ModelConfig, version: int) -> ModelVersionSpec:
    """The completed configuration of one version (overrides applied, checked against its file)."""
    vconfig = config.for_version(version)
    path = directory / str(version) / vconfig.model_filename()
    graph_inputs, graph_outputs = read_signature(path, vconfig.platform)
    source = config.source or str(directory / "model.toml")
    batchable = all(t.shape[:1] == (-1,) for t in (*graph_inputs, *graph_outputs))
    max_batch = vconfig.max_batch_size
    if max_batch is None:
        max_batch = DEFAULT_MAX_BATCH_SIZE if batchable else 0
    elif max_batch > 0 and not batchable:
        fixed = next(t for t in (*graph_inputs, *graph_outputs) if t.shape[:1] != (-1,))
        raise ConfigError(
            source,
            "max_batch_size",
            f"is {max_batch} but {path.name} has {fixed.name!r} with fixed first dimension {list(fixed.shape)}",
            hint="set max_batch_size = 0, or export the model with a dynamic batch dimension",
        )
    strip = 1 if max_batch > 0 else 0
    inputs = _complete(source, "input", vconfig.inputs, graph_inputs, strip, path)
    outputs = _complete(source, "output", vconfig.outputs, graph_outputs, strip, path)
    completed = replace(vconfig, max_batch_size=max_batch, inputs=inputs, outputs=outputs)
    return ModelVersionSpec(config.name, version, path, completed)


def _complete(
    source: str, kind: str, declared: tuple[TensorSpec, ...], graph: tuple[TensorSpec, ...], strip: int, path: Path
) -> tuple[TensorSpec, ...]:
    from_graph = {t.name: TensorSpec(t.name, t.datatype, t.shape[strip:]) for t in graph}
    if not declared:
        return tuple(from_graph.values())
    result: list[TensorSpec] = []
    for i, d in enumerate(declared):
        where = f"{kind}[{i}]"
        g = from_graph.get(d.name)
        if g is None:
            raise ConfigError(
                source,
                f"{where}.name",
                f"{d.name!r} is not a {kind} of {path.name}",
                hint=f"its {kind}s: {', '.join(from_graph)}",
            )
        if d.datatype and d.datatype != g.datatype:
            raise ConfigError(source, f"{where}.datatype", f"declares {d.datatype} but {path.name} has {g.datatype}")
        shape = d.shape or g.shape
        if d.shape:
            compatible = len(d.shape) == len(g.shape) and all(
                gd == -1 or dd == gd for dd, gd in zip(d.shape, g.shape, strict=True)
            )
            if not compatible:
                raise ConfigError(
                    source,
                    f"{where}.shape",
                    f"declares {list(d.shape)} but {path.name} has {list(g.shape)}"
                    + (" (without the batch dimension)" if strip else ""),
                )
        if (d.pad_value is not None or d.mask) and shape[:1] != (-1,):
            raise ConfigError(
                source,
                f"{where}.{'pad_value' if d.pad_value is not None else 'mask'}",
                f"pads the first dimension after the batch, but its shape {list(shape)} does not start with -1",
            )
        result.append(replace(d, datatype=d.datatype or g.datatype, shape=shape))
    if kind == "input":
        missing = [n for n in from_graph if n not in {t.name for t in result}]
        if missing:
            raise ConfigError(
                source, kind, f"does not declare {', '.join(map(repr, missing))}, which {path.name} needs"
            )
    return tuple(result)
