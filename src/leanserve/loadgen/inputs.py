"""What each request carries: tensors within the model's declared shapes and datatypes, encoded once.

Inputs come from the server's model metadata (``GET /v2/models/M``; an experiment alias answers
with its control's), then one of: random values (default), the arrays of an ``.npz`` file keyed by
input name (``--data file.npz``, one request per row), or the demo's held-out examples
(``--data demo``: ``<demo repo>/<model>/eval.npz``). Each sample becomes the complete bytes of one
HTTP request, JSON or binary tensors (the protocol's binary extension), before the load starts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ..errors import ClientError, LeanserveError, ServerError, UsageError
from ..protocol.binary import tensor_to_binary
from ..protocol.datatypes import datatype_of, numpy_dtype

MAX_SAMPLES = 64  # distinct request bodies per model: enough to vary, few enough to stay in cache
DEMO = "demo"
DEMO_NOT_INPUTS = ("labels", "language")  # what the demo's eval.npz holds beside the inputs


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a variable dimension


@dataclass(frozen=True, slots=True)
class Target:
    """A model (or alias) and version as the URL names them."""

    model: str
    version: str | None = None

    @property
    def path(self) -> str:
        model = urllib.parse.quote(self.model, safe="")
        if self.version is None:
            return f"/v2/models/{model}"
        return f"/v2/models/{model}/versions/{urllib.parse.quote(self.version, safe='')}"


def fetch_inputs(base_url: str, target: Target, headers: Mapping[str, str], timeout: float = 30.0) -> list[TensorSpec]:
    """The model's declared inputs, from its metadata."""
    request = urllib.request.Request(base_url + target.path, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        message = f"the metadata of {target.model!r} ({base_url}{target.path}) answered {e.code}: {detail}"
        if e.code >= 500:
            raise ServerError(message) from None
        error = ClientError(
            message, hint="check the model name (and --version); `leanserve models list URL` lists them"
        )
        error.status = e.code
        raise error from None
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(f"cannot reach {base_url}: {e}", hint="is the server running?") from None
    try:
        return [TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in doc["inputs"]]
    except (KeyError, TypeError, ValueError):
        raise ServerError(f"the metadata of {target.model!r} names no inputs: {str(doc)[:300]}") from None


def parse_spec(text: str) -> TensorSpec:
    """``name:DATATYPE:dims``, e.g. ``x:FP32:-1,64`` (for a server without model metadata)."""
    name, _, rest = text.partition(":")
    datatype, _, dims = rest.partition(":")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
        numpy_dtype(datatype) if datatype != "BYTES" else None
    except (ValueError, LeanserveError):
        shape = ()
        name = ""
    if not name or not shape:
        raise UsageError(f"{text!r} does not declare an input", hint="name:DATATYPE:dims, e.g. x:FP32:-1,64")
    return TensorSpec(name, datatype, shape)


def specs_of_file(data: str | Path, model: str) -> list[TensorSpec]:
    """Inputs read off a data file's arrays (every array but the demo's labels): one row per request."""
    path = _demo_path(model) if str(data) == DEMO else Path(data)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return [
                TensorSpec(name, datatype_of(arrays[name]), (-1, *arrays[name].shape[1:]))
                for name in arrays.files
                if not (str(data) == DEMO and name in DEMO_NOT_INPUTS)
            ]
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def concrete_shape(spec: TensorSpec) -> tuple[int, ...]:
    """One request's shape: every variable dimension 1 (the batch dimension: one item per request)."""
    return tuple(1 if d < 0 else d for d in spec.shape)


def random_samples(specs: Sequence[TensorSpec], count: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` samples of random values of each input's datatype (small integers for integer inputs:
    they are usually indices, token ids or masks, which must stay within a vocabulary)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        sample = {}
        for spec in specs:
            shape = concrete_shape(spec)
            if spec.datatype == "BYTES":
                sample[spec.name] = np.array([b"leanserve"] * int(np.prod(shape)), dtype=object).reshape(shape)
                continue
            dtype = numpy_dtype(spec.datatype)
            if spec.datatype == "BOOL":
                sample[spec.name] = rng.random(shape) < 0.5
            elif np.issubdtype(dtype, np.integer):
                sample[spec.name] = rng.integers(0, 2 if "mask" in spec.name else 100, shape).astype(dtype)
            else:
                sample[spec.name] = rng.standard_normal(shape).astype(dtype)
        out.append(sample)
    return out


def file_samples(path: Path, specs: Sequence[TensorSpec], limit: int = MAX_SAMPLES) -> list[dict[str, np.ndarray]]:
    """Rows of an ``.npz`` keyed by input name: one request per row (up to ``limit``), each one item."""
    try:
        with np.load(path, allow_pickle=False) as data:
            absent = [spec.name for spec in specs if spec.name not in data.files]
            if absent:
                raise UsageError(
                    f"{path} has no array named {absent[0]!r}",
                    hint=f"the model's inputs are {', '.join(s.name for s in specs)}; name the arrays after them",
                )
            arrays = {spec.name: data[spec.name] for spec in specs}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    rows = {len(a) for a in arrays.values()}
    if len(rows) != 1 or 0 in rows:
        raise UsageError(f"{path}: the arrays need the same non-zero number of rows, got {sorted(rows)}")
    samples = []
    for i in range(min(rows.pop(), limit)):
        sample = {}
        for spec in specs:
            row = arrays[spec.name][i : i + 1]
            if spec.datatype != "BYTES":
                row = row.astype(numpy_dtype(spec.datatype), copy=False)
            sample[spec.name] = np.ascontiguousarray(row)
        samples.append(sample)
    return samples


def demo_samples(model: str, specs: Sequence[TensorSpec], repo: Path | None = None) -> list[dict[str, np.ndarray]]:
    """The demo's held-out examples of ``model`` (digits images, MiniLM sentences)."""
    path = _demo_path(model, repo)
    if not path.is_file():
        raise UsageError(f"no demo examples at {path}", hint="build the demo first: leanserve demo --no-serve")
    return file_samples(path, specs)


def _demo_path(model: str, repo: Path | None = None) -> Path:
    from ..demo import default_demo_dir

    return (repo or default_demo_dir()) / model / "eval.npz"


def samples_for(
    data: str | Path | None, model: str, specs: Sequence[TensorSpec], seed: int = 0
) -> list[dict[str, np.ndarray]]:
    if data is None:
        return random_samples(specs, seed=seed)
    if str(data) == DEMO:
        return demo_samples(model, specs)
    return file_samples(Path(data), specs)


def encode_body(
    sample: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], binary: bool
) -> tuple[bytes, int | None]:
    """The request body and, for binary tensors, the JSON header's length."""
    inputs = []
    raw = []
    for spec in specs:
        array = sample[spec.name]
        entry: dict[str, object] = {"name": spec.name, "shape": list(array.shape), "datatype": spec.datatype}
        if binary:
            data = tensor_to_binary(array, spec.datatype)
            entry["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        elif spec.datatype == "BYTES":
            entry["data"] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        inputs.append(entry)
    header = orjson.dumps({"inputs": inputs})
    if not binary:
        return header, None
    return header + b"".join(raw), len(header)


def encode_request(
    host: str,
    target: Target,
    sample: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    binary: bool,
    headers: Mapping[str, str],
) -> bytes:
    """The complete bytes of one keep-alive HTTP/1.1 inference request."""
    body, header_length = encode_body(sample, specs, binary)
    lines = [
        f"POST {target.path}/infer HTTP/1.1",
        f"Host: {host}",
        "Content-Type: " + ("application/octet-stream" if binary else "application/json"),
        f"Content-Length: {len(body)}",
    ]
    if header_length is not None:
        lines.append(f"Inference-Header-Content-Length: {header_length}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
