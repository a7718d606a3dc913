"""Typed model configuration (``model.toml``): the schema, parsing and validation.

A model directory holds an optional ``model.toml``; whatever it leaves out is completed from
the model file by :mod:`leanserve.repository` (Triton calls this auto-complete). Shapes follow
Triton's convention: when ``max_batch_size > 0`` the batch dimension is implicit and not part
of ``shape``; ``-1`` marks a variable dimension.

The dataclasses below are the one schema of the file. A field's TOML key, type, minimum and
choices come from the field itself, its type hint and its ``metadata``; :func:`from_table` reads
any of them from a table and :func:`to_table` writes one back, so adding a field is all it takes
for ``model.toml`` to accept it. The metadata a field may carry:

``key``      the TOML key, where it differs from the field name
``minimum``  the least number allowed (for a list of numbers, of each one)
``choices``  the strings allowed (a ``Literal`` type gives them without this)
``sort``     read a list sorted
``check``    ``check(value) -> reason or None``, run on the value read
``parse``    ``parse(reader, raw, field) -> value``, for a field the type alone cannot read
``toml``     False for a field that is no part of the file

Every problem is raised as :class:`~leanserve.errors.ConfigError` naming the file, the field
and the reason, so one bad model never hides which model or which line was wrong.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError, UsageError
from .memory import parse_size
from .protocol.datatypes import DATATYPES

Platform = Literal["onnxruntime", "openvino"]
PLATFORMS: tuple[str, ...] = get_args(Platform)
DEFAULT_MODEL_FILES: dict[str, str] = {"onnxruntime": "model.onnx", "openvino": "model.xml"}
VersionPolicyKind = Literal["latest", "all", "specific"]
LoadPolicy = Literal["always", "on_demand"]
LOAD_POLICIES: tuple[str, ...] = get_args(LoadPolicy)
GraphOptimization = Literal["disabled", "basic", "extended", "all"]


def _plain_file_name(name: str) -> str | None:
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        return f"{name!r} must be a plain file name inside the version folder"
    return None


def _dimensions(shape: tuple[int, ...]) -> str | None:
    return "dimensions must be positive or -1 (variable)" if 0 in shape else None


def _positive(value: float) -> str | None:
    return "must be greater than 0" if value <= 0 else None


# ---- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str = field(default="", metadata={"choices": DATATYPES})  # "": from the model file
    # Without the batch dimension when the model batches; -1 is variable. (): from the model file.
    shape: tuple[int, ...] = field(default=(), metadata={"minimum": -1, "check": _dimensions})
    # Ragged along the first dimension after the batch (text): requests of different lengths
    # share a batch, padded to its longest member with this value (see leanserve.processing).
    pad_value: float | None = None
    # The attention mask of the ragged inputs: 1 over each request's own positions, 0 over the
    # padding. A request (or a preprocess) may leave it out; the server builds it then.
    # (None rather than False: a model.toml written back leaves it out.)
    mask: bool | None = None


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    # 0 ms: a lone request on an idle model runs at once; requests that pile up while the
    # model is busy are still batched together.
    max_queue_delay_ms: float = field(default=0.0, metadata={"minimum": 0.0})
    preferred_batch_sizes: tuple[int, ...] = field(default=(), metadata={"minimum": 1, "sort": True})
    max_queue_size: int = field(default=4096, metadata={"minimum": 1})
    # Cap batches at the size measured to give the most rows per second (see batch_size.BatchSizeTuner).
    adaptive_batch_size: bool = True
    # Overload (admission.py): the least wait the queue may keep standing before requests that waited
    # twice as long are refused with 503. The target is also at least two measured batch cycles, so
    # it grows with the model and with a starved machine. Raise it for patient callers (batch jobs,
    # many closed-loop clients that never time out); 0 turns shedding off.
    overload_wait_ms: float = field(default=100.0, metadata={"minimum": 0.0})


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    # 0: chosen from the model's cost measured at load (see runtimes.threads; OpenVINO: its own default)
    intra_op_threads: int = field(default=0, metadata={"minimum": 0})
    inter_op_threads: int = field(default=1, metadata={"minimum": 0})
    providers: tuple[str, ...] = ()  # empty: the best available (TensorRT, CUDA, then CPU)
    graph_optimization: GraphOptimization = "all"
    # Whether ONNX Runtime's idle intra-op workers spin (busy-wait) for the next parallel section
    # instead of sleeping. With several threads a model like MiniLM runs dozens of parallel
    # sections per inference, and waking sleeping workers for each costs 10-20% of its latency;
    # spinning costs CPU that other models on the same cores could use, and the event loop's core.
    # Unset: ONNX Runtime's spin when a core is left over for the event loop, else a 50 us spin
    # before sleeping, which catches a run's next section and frees the core between runs (see
    # runtimes.threads). true: ONNX Runtime's spin; false: workers sleep at once.
    allow_spinning: bool | None = None
    # Longest one engine run may take (0: no limit). ONNX Runtime cancels a run past it between two
    # operators (RunOptions.terminate) and its requests get 504; a run that does not come back even
    # then leaves the version unavailable, with the reason (batching.Batcher's watchdog).
    timeout_ms: float = field(default=0.0, metadata={"minimum": 0.0})


@dataclass(frozen=True, slots=True)
class Scale:
    """Replicas of the model on a cluster engine (``serve --ray``: Ray Serve's deployment options).

    Either a fixed ``num_replicas``, or ``min_replicas`` / ``max_replicas`` with autoscaling on
    ``target_ongoing_requests`` per replica (Ray Serve's AutoscalingConfig). One process
    (``leanserve serve``) ignores it.
    """

    num_replicas: int | None = field(default=None, metadata={"minimum": 1})  # None: 1, or autoscaling
    min_replicas: int | None = field(default=None, metadata={"minimum": 0})
    max_replicas: int | None = field(default=None, metadata={"minimum": 1})
    target_ongoing_requests: float = field(default=2.0, metadata={"minimum": 0.0, "check": _positive})
    # Requests a replica accepts at once: enough for the dynamic batcher to form batches (Ray's
    # default of 5 would cap every batch at 5 rows).
    max_ongoing_requests: int = field(default=64, metadata={"minimum": 1})
    # CPUs Ray reserves for each replica; the replica's engine threads follow (at least one).
    num_cpus: float = field(default=1.0, metadata={"minimum": 0.0})

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    kind: VersionPolicyKind = field(default="latest", metadata={"key": "policy"})
    num_versions: int = field(default=1, metadata={"minimum": 1})
    versions: tuple[int, ...] = field(default=(), metadata={"minimum": 1})

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
    model_file: str | None = field(default=None, metadata={"check": _plain_file_name})
    runtime: RuntimeOptions | None = None
    max_batch_size: int | None = field(default=None, metadata={"minimum": 0})
    dynamic_batching: DynamicBatching | None = None
    label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


# The parts of the file whose reading is more than their type: each is called with the reader,
# the raw TOML value and the dotted field, and returns the field's value.


def _tensor_specs(r: _Reader, value: Any, where: str) -> tuple[TensorSpec, ...]:
    specs: tuple[TensorSpec, ...] = r.typed(tuple[TensorSpec, ...], value, where, {})
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise r.fail(f"{where}[{i}].name", f"duplicate {where} name {spec.name!r}")
        seen.add(spec.name)
    return specs


def _version_policy(r: _Reader, value: Any, where: str) -> VersionPolicy:
    if isinstance(value, str):  # shorthand: version_policy = "all"
        value = {"policy": value}
    policy = r.read(VersionPolicy, value, where)
    if policy.kind == "specific" and not policy.versions:
        raise r.fail(f"{where}.versions", "policy 'specific' needs a non-empty list of versions")
    if policy.kind != "specific" and policy.versions:
        raise r.fail(f"{where}.versions", f"only used with policy 'specific', not {policy.kind!r}")
    return policy


def _version_overrides(r: _Reader, value: Any, where: str) -> dict[int, VersionOverrides]:
    result: dict[int, VersionOverrides] = {}
    for key, raw in r.table(value, where).items():
        at = f"{where}.{key}"
        number = version_number(str(key))
        if number is None:
            raise r.fail(at, "version keys must be positive integers, as the version folders are")
        result[number] = r.read(VersionOverrides, raw, at)
    return result


def _steps(steps: tuple[str, ...]) -> str | None:
    for step in steps:
        kind, _, rest = step.partition(":")
        if kind not in ("model", "function") or not rest or (kind == "function" and not rest.isidentifier()):
            return f'{step!r} is not a step: use "model:NAME", "model:NAME:VERSION" or "function:NAME"'
    return None


def _size(r: _Reader, value: Any, where: str) -> int:
    try:
        size = parse_size(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except UsageError as e:
        raise r.fail(where, e.message, e.hint) from None
    if size is None or size <= 0:
        raise r.fail(where, f'expected a positive size such as "300MiB", got {value!r}')
    return size


def _handler_file(name: str) -> str | None:
    if not name.endswith(".py"):
        return f"{name!r} must be a Python file (.py)"
    return _plain_file_name(name)


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    """``[handler]``: the model's own pre- and post-processing, and the tensors its clients see.

    The handler file is operator-trusted code from the repository (like Triton's Python
    backend); it is imported when the version loads, never from a request.
    """

    file: str = field(default="handler.py", metadata={"check": _handler_file})
    # What clients send and receive (BYTES allowed). Empty: the engine's own inputs / outputs.
    # Shapes exclude the batch dimension when the model batches; () is one element per row.
    inputs: tuple[TensorSpec, ...] = field(default=(), metadata={"key": "input", "parse": _tensor_specs})
    outputs: tuple[TensorSpec, ...] = field(default=(), metadata={"key": "output", "parse": _tensor_specs})
    # A request not answered by then (a hanging handler, a long queue) gets a 504.
    timeout_ms: float = field(default=30000.0, metadata={"minimum": 1.0})
    # Steps after the engine, each another model of the repository or a function of the
    # handler file: "model:NAME[:VERSION]" or "function:NAME" (see leanserve.processing.pipeline).
    steps: tuple[str, ...] = field(default=(), metadata={"check": _steps})


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    platform: Platform = "onnxruntime"
    model_file: str | None = field(default=None, metadata={"check": _plain_file_name})  # None: the platform's
    max_batch_size: int | None = field(default=None, metadata={"minimum": 0})  # None: from the model file
    inputs: tuple[TensorSpec, ...] = field(default=(), metadata={"key": "input", "parse": _tensor_specs})
    outputs: tuple[TensorSpec, ...] = field(default=(), metadata={"key": "output", "parse": _tensor_specs})
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy, metadata={"parse": _version_policy})
    default_version: int | None = field(default=None, metadata={"minimum": 1})  # None: the highest loaded
    metadata: dict[str, Any] = field(default_factory=dict)
    versions: dict[int, VersionOverrides] = field(default_factory=dict, metadata={"parse": _version_overrides})
    # "always": loaded at start-up and never evicted; "on_demand": loaded by its first request,
    # evicted when the memory budget needs room. None: the server's default (--load).
    load: LoadPolicy | None = None
    # Overrides the measured size, for engines whose memory the resident set does not show.
    memory_bytes: int | None = field(default=None, metadata={"key": "memory", "parse": _size})
    scale: Scale = field(default_factory=Scale)  # replicas on Ray Serve
    handler: HandlerConfig | None = None  # [handler]: pre- and post-processing in process
    source: str | None = field(default=None, metadata={"toml": False})  # the file read, for error messages

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

    @property
    def public_inputs(self) -> tuple[TensorSpec, ...]:
        """What clients send: the handler's declared inputs, else the engine's."""
        return self.handler.inputs if self.handler is not None and self.handler.inputs else self.inputs

    @property
    def public_outputs(self) -> tuple[TensorSpec, ...]:
        """What clients receive: the handler's declared outputs, else the engine's."""
        return self.handler.outputs if self.handler is not None and self.handler.outputs else self.outputs

    @property
    def ragged(self) -> bool:
        """Whether some input is padded per batch (and so requests of different lengths share one)."""
        return any(spec.pad_value is not None for spec in self.inputs)


def version_number(name: str) -> int | None:
    """The version a folder, a ``[versions.N]`` key or a request's URL names, or None when it names none.

    Only canonical positive integers are versions: "01" would alias "1", and "0" is not a version.
    Every reader and writer of a repository asks here, so that they agree on what a version is.
    """
    # isascii first: str.isdigit() also accepts digits such as "²" that int() cannot read.
    if not (name.isascii() and name.isdigit()) or name.startswith("0"):
        return None
    return int(name)


# ---- one reader and one writer for every dataclass above ------------------------------------

T = TypeVar("T")
_METADATA = frozenset({"key", "minimum", "choices", "sort", "check", "parse", "toml"})
_ITEMS = {bool: "true or false values", int: "integers", float: "numbers", str: "strings"}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: str  # in the TOML table
    hint: Any  # the resolved type
    meta: Mapping[str, Any]
    default: Any  # MISSING when the field is required

    @property
    def omitted_at_default(self) -> bool:
        """Whether the writer leaves the field out at its default: None, "" and empty lists say nothing."""
        return self.default is None or (isinstance(self.default, (str, tuple, list, dict)) and not self.default)


_SCHEMAS: dict[type, tuple[_Field, ...]] = {}


def _schema(cls: type) -> tuple[_Field, ...]:
    """The TOML fields of a dataclass, from its fields, type hints and metadata."""
    # Built once per class; two threads racing here build the same tuple.
    known = _SCHEMAS.get(cls)
    if known is not None:
        return known
    hints = get_type_hints(cls)
    result: list[_Field] = []
    for f in fields(cls):
        unknown = set(f.metadata) - _METADATA
        if unknown:  # a typo would silently drop a check
            raise TypeError(f"{cls.__name__}.{f.name}: unknown schema metadata {sorted(unknown)}")
        if not f.metadata.get("toml", True):
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        result.append(_Field(f.name, f.metadata.get("key", f.name), hints[f.name], f.metadata, default))
    _SCHEMAS[cls] = tuple(result)
    return _SCHEMAS[cls]


def from_table(cls: type[T], table: Any, source: str, where: str = "", defaults: Mapping[str, Any] | None = None) -> T:
    """Read a TOML table into the dataclass ``cls``, validating every field against its schema.

    ``source`` names the file in errors and ``where`` the table's dotted place in it; ``defaults``
    gives values to fields the table leaves out (over the dataclass's own defaults) and to fields
    that are no part of the file. Unknown keys are refused with the list of known ones.
    """
    return _Reader(source).read(cls, table, where, defaults or {})


def to_table(obj: Any) -> dict[str, Any]:
    """The TOML table of one of the dataclasses above, which :func:`from_table` reads back equal.

    A field at a default that says nothing (None, "", an empty list or table) is left out; every
    other value is written, defaults included, so the file shows what runs.
    """
    table: dict[str, Any] = {}
    for f in _schema(type(obj)):
        value = getattr(obj, f.name)
        if value is None or (f.omitted_at_default and value == f.default):
            continue
        table[f.key] = _toml_value(value)
    return table


def _toml_value(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_table(value)
    if isinstance(value, (tuple, list)):
        return [_toml_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _toml_value(v) for k, v in value.items()}
    return value


class _Reader:
    """Reads typed values out of TOML, raising ConfigError with the dotted field path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, field_name: str | None, reason: str, hint: str | None = None) -> ConfigError:
        return ConfigError(self.path, field_name, reason, hint)

    def read(self, cls: type[T], value: Any, where: str, defaults: Mapping[str, Any] = types.MappingProxyType({})) -> T:
        """A dataclass from a table: its fields read by their type and metadata."""
        table = self.table(value, where)
        schema = _schema(cls)
        known = {f.key for f in schema}
        extra = sorted(set(table) - known)
        if extra:
            prefix = f"{where}." if where else ""
            raise self.fail(f"{prefix}{extra[0]}", "unknown field", hint=f"known fields: {', '.join(sorted(known))}")
        values = dict(defaults)
        for f in schema:
            at = f"{where}.{f.key}" if where else f.key
            if f.key in table:
                values[f.name] = self.field(f, table[f.key], at)
            elif f.default is MISSING and f.name not in values:
                raise self.fail(at, "missing")
        return cls(**values)

    def field(self, f: _Field, value: Any, where: str) -> Any:
        parse = f.meta.get("parse")
        result = parse(self, value, where) if parse is not None else self.typed(f.hint, value, where, f.meta)
        check = f.meta.get("check")
        reason = check(result) if check is not None else None
        if reason is not None:
            raise self.fail(where, reason)
        return result

    def typed(self, hint: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
        """``value`` read as the type ``hint``, under the field's ``minimum`` and ``choices``."""
        origin, args = get_origin(hint), get_args(hint)
        if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
            # X | None: absent is None, present is an X.
            return self.typed(args[args[0] is type(None)], value, where, meta)
        if hint is bool:
            return self.boolean(value, where)
        if hint is int:
            return self.integer(value, where, meta.get("minimum"))
        if hint is float:
            return self.number(value, where, meta.get("minimum"))
        if hint is str or origin is Literal:
            return self.string(value, where, meta.get("choices", args or None))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return self.array(args[0], value, where, meta)
        if origin is dict and args == (str, Any):
            return self.table(value, where)
        if is_dataclass(hint) and isinstance(hint, type):
            return self.read(hint, value, where)
        raise TypeError(f"{where}: model.toml has no reader for {hint!r}")

    def array(self, item: Any, value: Any, where: str, meta: Mapping[str, Any]) -> tuple[Any, ...]:
        if not isinstance(value, list):
            if is_dataclass(item):
                raise self.fail(where, f"expected an array of tables ([[{where}]]), got {type(value).__name__}")
            raise self.fail(where, f"expected a list of {_ITEMS.get(item, 'values')}, got {value!r}")
        items = tuple(self.typed(item, v, f"{where}[{i}]", meta) for i, v in enumerate(value))
        return tuple(sorted(items)) if meta.get("sort") else items

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table, got {type(value).__name__}")
        return value

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

    def number(self, value: Any, where: str, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}")
        return float(value)

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(where, f"{value!r} is not one of {', '.join(choices)}")
        return value


# ---- model.toml --------------------------------------------------------------------------------


def parse_model_config(data: dict[str, Any], default_name: str, source: str) -> ModelConfig:
    """Build a ModelConfig from a parsed TOML table; ``source`` names the file in errors."""
    r = _Reader(source)
    config = r.read(ModelConfig, data, "", {"name": default_name, "source": source})
    if config.name != default_name:
        raise r.fail(
            "name",
            f"{config.name!r} differs from the model's folder name {default_name!r}",
            hint="remove the field or rename the folder",
        )
    scale = config.scale
    if scale.num_replicas is not None and scale.autoscaling:
        raise r.fail("scale.num_replicas", "give either num_replicas or min_replicas/max_replicas, not both")
    if scale.min_replicas is not None and scale.max_replicas is not None and scale.min_replicas > scale.max_replicas:
        raise r.fail("scale.min_replicas", f"{scale.min_replicas} exceeds max_replicas {scale.max_replicas}")
    if config.handler is not None:
        for kind, specs in (("input", config.handler.inputs), ("output", config.handler.outputs)):
            for i, spec in enumerate(specs):
                if not spec.datatype:
                    raise r.fail(
                        f"handler.{kind}[{i}].datatype",
                        "missing: the handler's tensors have no model file to read it from",
                    )
    preferred = config.dynamic_batching.preferred_batch_sizes
    if config.max_batch_size is not None and preferred and max(preferred) > config.max_batch_size:
        raise r.fail(
            "dynamic_batching.preferred_batch_sizes",
            f"{max(preferred)} exceeds max_batch_size {config.max_batch_size}",
        )
    return config


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
