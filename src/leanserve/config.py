"""Typed model configuration (``model.toml``): parsing and validation.

A model directory holds an optional ``model.toml``; whatever it leaves out is completed from
the model file by :mod:`leanserve.repository` (Triton calls this auto-complete). Shapes follow
Triton's convention: when ``max_batch_size > 0`` the batch dimension is implicit and not part
of ``shape``; ``-1`` marks a variable dimension.

Every problem is raised as :class:`~leanserve.errors.ConfigError` naming the file, the field
and the reason, so one bad model never hides which model or which line was wrong.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, UsageError
from .memory import parse_size
from .protocol.datatypes import DATATYPES

Platform = Literal["onnxruntime", "openvino"]
PLATFORMS: tuple[str, ...] = ("onnxruntime", "openvino")
DEFAULT_MODEL_FILES: dict[str, str] = {"onnxruntime": "model.onnx", "openvino": "model.xml"}
VersionPolicyKind = Literal["latest", "all", "specific"]
LoadPolicy = Literal["always", "on_demand"]
LOAD_POLICIES: tuple[str, ...] = ("always", "on_demand")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # without the batch dimension when the model batches; -1 is variable


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    # 0 ms: a lone request on an idle model runs at once; requests that pile up while the
    # model is busy are still batched together.
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 4096
    # Cap batches at the size measured to give the most rows per second (see batching.BatchSizeTuner).
    adaptive_batch_size: bool = True


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    intra_op_threads: int = 0  # 0: the engine's default
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ()  # empty: the best available (TensorRT, CUDA, then CPU)
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    # Whether ONNX Runtime's idle intra-op workers spin (busy-wait) for the next parallel section
    # instead of sleeping. With several threads a model like MiniLM runs dozens of parallel
    # sections per inference, and waking sleeping workers for each costs 10-20% of its latency;
    # spinning costs CPU that other models on the same cores could use.
    allow_spinning: bool = True


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    kind: VersionPolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to load, ascending, out of those present on disk."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclass(frozen=True, slots=True)
class VersionOverrides:
    """Settings one version may change: an optimized variant can use another engine."""

    platform: Platform | None = None
    model_file: str | None = None
    runtime: RuntimeOptions | None = None
    max_batch_size: int | None = None
    dynamic_batching: DynamicBatching | None = None
    label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    platform: Platform = "onnxruntime"
    model_file: str | None = None  # None: the platform's default file name
    max_batch_size: int | None = None  # None: completed from the model file
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    default_version: int | None = None  # None: the highest loaded version
    metadata: dict[str, Any] = field(default_factory=dict)
    versions: dict[int, VersionOverrides] = field(default_factory=dict)
    # "always": loaded at start-up and never evicted; "on_demand": loaded by its first request,
    # evicted when the memory budget needs room. None: the server's default (--load).
    load: LoadPolicy | None = None
    # Overrides the measured size, for engines whose memory the resident set does not show.
    memory_bytes: int | None = None
    source: str | None = None  # the file this was read from, for error messages

    @property
    def batching(self) -> bool:
        return bool(self.max_batch_size and self.max_batch_size > 0)

    def for_version(self, version: int) -> ModelConfig:
        """This configuration with the overrides of one version applied."""
        o = self.versions.get(version)
        if o is None:
            return self
        platform = o.platform or self.platform
        model_file = o.model_file or (self.model_file if o.platform in (None, self.platform) else None)
        return replace(
            self,
            platform=platform,
            model_file=model_file,
            runtime=o.runtime or self.runtime,
            max_batch_size=self.max_batch_size if o.max_batch_size is None else o.max_batch_size,
            dynamic_batching=o.dynamic_batching or self.dynamic_batching,
        )

    def model_filename(self) -> str:
        return self.model_file or DEFAULT_MODEL_FILES[self.platform]


# ---- parsing ---------------------------------------------------------------------------------

_TOP_LEVEL_KEYS = {
    "name",
    "platform",
    "model_file",
    "max_batch_size",
    "input",
    "output",
    "dynamic_batching",
    "runtime",
    "version_policy",
    "default_version",
    "metadata",
    "versions",
    "load",
    "memory",
}


class _Reader:
    """Reads typed fields out of a TOML table, raising ConfigError with the dotted field path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, field_name: str | None, reason: str, hint: str | None = None) -> ConfigError:
        return ConfigError(self.path, field_name, reason, hint)

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table, got {type(value).__name__}")
        return value

    def unknown_keys(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(table) - allowed)
        if extra:
            prefix = f"{where}." if where else ""
            raise self.fail(f"{prefix}{extra[0]}", "unknown field", hint=f"known fields: {', '.join(sorted(allowed))}")

    def integer(self, value: Any, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def number(self, value: Any, where: str, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {value!r}")
        if value < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return float(value)

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(where, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def int_list(self, value: Any, where: str, minimum: int) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of integers, got {value!r}")
        return tuple(self.integer(v, f"{where}[{i}]", minimum) for i, v in enumerate(value))

    def str_list(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of strings, got {value!r}")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _tensor_specs(r: _Reader, value: Any, kind: str) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise r.fail(kind, f"expected an array of tables ([[{kind}]]), got {type(value).__name__}")
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(value):
        where = f"{kind}[{i}]"
        t = r.table(raw, where)
        r.unknown_keys(t, {"name", "datatype", "shape"}, where)
        if "name" not in t:
            raise r.fail(f"{where}.name", "missing")
        name = r.string(t["name"], f"{where}.name")
        if name in seen:
            raise r.fail(f"{where}.name", f"duplicate {kind} name {name!r}")
        seen.add(name)
        datatype = r.string(t["datatype"], f"{where}.datatype", DATATYPES) if "datatype" in t else ""
        shape = r.int_list(t["shape"], f"{where}.shape", minimum=-1) if "shape" in t else ()
        if 0 in shape:
            raise r.fail(f"{where}.shape", "dimensions must be positive or -1 (variable)")
        specs.append(TensorSpec(name=name, datatype=datatype, shape=shape))
    return (specs and tuple(specs)) or ()


def _dynamic_batching(r: _Reader, value: Any, where: str) -> DynamicBatching:
    t = r.table(value, where)
    r.unknown_keys(t, {"max_queue_delay_ms", "preferred_batch_sizes", "max_queue_size", "adaptive_batch_size"}, where)
    d = DynamicBatching()
    return DynamicBatching(
        max_queue_delay_ms=r.number(t["max_queue_delay_ms"], f"{where}.max_queue_delay_ms")
        if "max_queue_delay_ms" in t
        else d.max_queue_delay_ms,
        preferred_batch_sizes=tuple(sorted(r.int_list(t["preferred_batch_sizes"], f"{where}.preferred_batch_sizes", 1)))
        if "preferred_batch_sizes" in t
        else d.preferred_batch_sizes,
        max_queue_size=r.integer(t["max_queue_size"], f"{where}.max_queue_size", 1)
        if "max_queue_size" in t
        else d.max_queue_size,
        adaptive_batch_size=r.boolean(t["adaptive_batch_size"], f"{where}.adaptive_batch_size")
        if "adaptive_batch_size" in t
        else d.adaptive_batch_size,
    )


def _runtime(r: _Reader, value: Any, where: str) -> RuntimeOptions:
    t = r.table(value, where)
    r.unknown_keys(
        t, {"intra_op_threads", "inter_op_threads", "providers", "graph_optimization", "allow_spinning"}, where
    )
    d = RuntimeOptions()
    return RuntimeOptions(
        intra_op_threads=r.integer(t["intra_op_threads"], f"{where}.intra_op_threads", 0)
        if "intra_op_threads" in t
        else d.intra_op_threads,
        inter_op_threads=r.integer(t["inter_op_threads"], f"{where}.inter_op_threads", 0)
        if "inter_op_threads" in t
        else d.inter_op_threads,
        providers=r.str_list(t["providers"], f"{where}.providers") if "providers" in t else d.providers,
        graph_optimization=r.string(  # type: ignore[arg-type]
            t["graph_optimization"], f"{where}.graph_optimization", ("disabled", "basic", "extended", "all")
        )
        if "graph_optimization" in t
        else d.graph_optimization,
        allow_spinning=r.boolean(t["allow_spinning"], f"{where}.allow_spinning")
        if "allow_spinning" in t
        else d.allow_spinning,
    )


def _version_policy(r: _Reader, value: Any) -> VersionPolicy:
    where = "version_policy"
    if isinstance(value, str):  # shorthand: version_policy = "all"
        value = {"policy": value}
    t = r.table(value, where)
    r.unknown_keys(t, {"policy", "num_versions", "versions"}, where)
    kind = r.string(t.get("policy", "latest"), f"{where}.policy", ("latest", "all", "specific"))
    num = r.integer(t["num_versions"], f"{where}.num_versions", 1) if "num_versions" in t else 1
    versions = r.int_list(t["versions"], f"{where}.versions", 1) if "versions" in t else ()
    if kind == "specific" and not versions:
        raise r.fail(f"{where}.versions", "policy 'specific' needs a non-empty list of versions")
    if kind != "specific" and versions:
        raise r.fail(f"{where}.versions", f"only used with policy 'specific', not {kind!r}")
    return VersionPolicy(kind=kind, num_versions=num, versions=versions)  # type: ignore[arg-type]


def version_number(name: str) -> int | None:
    """The version a folder, a ``[versions.N]`` key or a request's URL names, or None when it names none.

    Only canonical positive integers are versions: "01" would alias "1", and "0" is not a version.
    Every reader and writer of a repository asks here, so that they agree on what a version is.
    """
    # isascii first: str.isdigit() also accepts digits such as "²" that int() cannot read.
    if not (name.isascii() and name.isdigit()) or name.startswith("0"):
        return None
    return int(name)


def _version_overrides(r: _Reader, value: Any) -> dict[int, VersionOverrides]:
    t = r.table(value, "versions")
    result: dict[int, VersionOverrides] = {}
    for key, raw in t.items():
        where = f"versions.{key}"
        number = version_number(str(key))
        if number is None:
            raise r.fail(where, "version keys must be positive integers, as the version folders are")
        o = r.table(raw, where)
        r.unknown_keys(
            o,
            {"platform", "model_file", "runtime", "max_batch_size", "dynamic_batching", "label", "provenance"},
            where,
        )
        result[number] = VersionOverrides(
            platform=r.string(o["platform"], f"{where}.platform", PLATFORMS)  # type: ignore[arg-type]
            if "platform" in o
            else None,
            model_file=_model_file(r, o["model_file"], f"{where}.model_file") if "model_file" in o else None,
            runtime=_runtime(r, o["runtime"], f"{where}.runtime") if "runtime" in o else None,
            max_batch_size=r.integer(o["max_batch_size"], f"{where}.max_batch_size", 0)
            if "max_batch_size" in o
            else None,
            dynamic_batching=_dynamic_batching(r, o["dynamic_batching"], f"{where}.dynamic_batching")
            if "dynamic_batching" in o
            else None,
            label=r.string(o["label"], f"{where}.label") if "label" in o else None,
            provenance=r.table(o["provenance"], f"{where}.provenance") if "provenance" in o else {},
        )
    return result


def _model_file(r: _Reader, value: Any, where: str) -> str:
    name = r.string(value, where)
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise r.fail(where, f"{name!r} must be a plain file name inside the version folder")
    return name


def parse_model_config(data: dict[str, Any], default_name: str, source: str) -> ModelConfig:
    """Build a ModelConfig from a parsed TOML table; ``source`` names the file in errors."""
    r = _Reader(source)
    r.unknown_keys(data, _TOP_LEVEL_KEYS, "")
    name = r.string(data["name"], "name") if "name" in data else default_name
    if name != default_name:
        raise r.fail(
            "name",
            f"{name!r} differs from the model's folder name {default_name!r}",
            hint="remove the field or rename the folder",
        )
    max_batch_size = r.integer(data["max_batch_size"], "max_batch_size", 0) if "max_batch_size" in data else None
    dyn = (
        _dynamic_batching(r, data["dynamic_batching"], "dynamic_batching")
        if "dynamic_batching" in data
        else DynamicBatching()
    )
    if max_batch_size is not None and dyn.preferred_batch_sizes and max(dyn.preferred_batch_sizes) > max_batch_size:
        raise r.fail(
            "dynamic_batching.preferred_batch_sizes",
            f"{max(dyn.preferred_batch_sizes)} exceeds max_batch_size {max_batch_size}",
        )
    default_version = r.integer(data["default_version"], "default_version", 1) if "default_version" in data else None
    return ModelConfig(
        name=name,
        platform=r.string(data["platform"], "platform", PLATFORMS) if "platform" in data else "onnxruntime",  # type: ignore[arg-type]
        model_file=_model_file(r, data["model_file"], "model_file") if "model_file" in data else None,
        max_batch_size=max_batch_size,
        inputs=_tensor_specs(r, data["input"], "input") if "input" in data else (),
        outputs=_tensor_specs(r, data["output"], "output") if "output" in data else (),
        dynamic_batching=dyn,
        runtime=_runtime(r, data["runtime"], "runtime") if "runtime" in data else RuntimeOptions(),
        version_policy=_version_policy(r, data["version_policy"]) if "version_policy" in data else VersionPolicy(),
        default_version=default_version,
        metadata=r.table(data["metadata"], "metadata") if "metadata" in data else {},
        versions=_version_overrides(r, data["versions"]) if "versions" in data else {},
        load=r.string(data["load"], "load", LOAD_POLICIES) if "load" in data else None,  # type: ignore[arg-type]
        memory_bytes=_size(r, data["memory"], "memory") if "memory" in data else None,
        source=source,
    )


def _size(r: _Reader, value: Any, where: str) -> int:
    try:
        size = parse_size(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except UsageError as e:
        raise r.fail(where, e.message, e.hint) from None
    if size is None or size <= 0:
        raise r.fail(where, f'expected a positive size such as "300MiB", got {value!r}')
    return size


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read ``<model_dir>/model.toml`` (or defaults when absent)."""
    path = model_dir / "model.toml"
    if not path.exists():
        return ModelConfig(name=model_dir.name, source=str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), None, f"not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), None, f"cannot be read: {e}") from e
    return parse_model_config(data, model_dir.name, str(path))
