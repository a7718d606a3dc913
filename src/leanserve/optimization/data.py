"""Evaluation data: load ``.npz`` files, check them against the model's inputs, split them.

A data set holds one array per model input (examples along axis 0) and, optionally, labels
and a group per example (a language, a customer segment) that the report breaks figures down by.
It is split once, deterministically, into a calibration part (used to build static int8
variants and to rank nodes for the fallback) and a held-out evaluation part (used to judge
every variant), so that no variant is judged on the data it was calibrated on.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..protocol.datatypes import numpy_dtype
from ..runtimes import EngineTensor


@dataclass(frozen=True, slots=True)
class Dataset:
    inputs: Mapping[str, np.ndarray]  # one array per model input, examples along axis 0
    labels: np.ndarray | None
    source: str
    groups: np.ndarray | None = None  # one group name per example, for per-group figures

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def take(self, indices: np.ndarray) -> Dataset:
        return Dataset(
            inputs={k: v[indices] for k, v in self.inputs.items()},
            labels=None if self.labels is None else self.labels[indices],
            source=self.source,
            groups=None if self.groups is None else self.groups[indices],
        )

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield {k: v[start : start + batch_size] for k, v in self.inputs.items()}


@dataclass(frozen=True, slots=True)
class Split:
    calibration: Dataset
    evaluation: Dataset
    calibration_indices: np.ndarray
    evaluation_indices: np.ndarray
    seed: int


def load_data(path: Path, labels: str | None = None, groups: str | None = None) -> Dataset:
    """Read an ``.npz`` file, or every ``.npz`` in a folder concatenated in name order."""
    if not path.exists():
        raise UsageError(f"evaluation data {path} does not exist", hint="pass an .npz file or a folder of them")
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path} holds no .npz files", hint="save arrays with numpy.savez(file, input=...)")
    parts = [_read_npz(f) for f in files]
    keys = set(parts[0])
    for f, part in zip(files[1:], parts[1:], strict=True):
        if set(part) != keys:
            raise UsageError(
                f"{f} holds arrays {sorted(part)}, but {files[0]} holds {sorted(keys)}",
                hint="every file of a data folder needs the same arrays",
            )
    arrays = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in sorted(keys)}
    return from_arrays(arrays, labels, source=str(path), groups=groups)


def from_arrays(
    arrays: Mapping[str, np.ndarray],
    labels: str | None = None,
    source: str = "<arrays>",
    groups: str | None = None,
) -> Dataset:
    """A data set from named arrays; ``labels`` and ``groups`` name arrays that are no model input."""
    if not arrays:
        raise UsageError(f"{source} holds no arrays")
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if labels is not None and labels == groups:
        raise UsageError(f"the array {labels!r} cannot be both the labels and the groups")
    label_array = _pop(arrays, labels, "the labels", source)
    group_array = _pop(arrays, groups, "the groups", source)
    lengths = {k: (len(v) if v.ndim else 0) for k, v in arrays.items()}
    if label_array is not None:
        lengths[labels or "labels"] = len(label_array) if label_array.ndim else 0
    if group_array is not None:
        if group_array.ndim != 1:
            raise UsageError(
                f"{source}: the groups array {groups!r} has shape {group_array.shape}",
                hint="groups hold one name or number per example, a 1-D array",
            )
        lengths[groups or "groups"] = len(group_array)
        group_array = group_array.astype(str)
    if len(set(lengths.values())) != 1:
        raise UsageError(
            f"{source}: arrays disagree on the number of examples (axis 0): "
            + ", ".join(f"{k}={n}" for k, n in lengths.items()),
        )
    if not arrays:
        raise UsageError(f"{source} holds only the labels and groups, no model inputs")
    return Dataset(inputs=arrays, labels=label_array, source=source, groups=group_array)


def _pop(arrays: dict[str, np.ndarray], name: str | None, role: str, source: str) -> np.ndarray | None:
    if name is None:
        return None
    if name not in arrays:
        raise UsageError(
            f"{source} has no array named {name!r} for {role}",
            hint=f"arrays present: {', '.join(sorted(arrays))}",
        )
    return arrays.pop(name)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        # allow_pickle=False: an object array in an .npz is a pickle, and we never unpickle.
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as e:
        raise UsageError(f"{path} holds pickled (object) arrays: {e}", hint="save plain numeric arrays") from e
    except (OSError, zipfile.BadZipFile) as e:
        raise UsageError(f"{path} is not a readable .npz file: {e}") from e


def conform(data: Dataset, model_inputs: Sequence[EngineTensor]) -> Dataset:
    """Check the arrays against the model's inputs; cast within a kind (float64 -> float32)."""
    expected = {t.name: t for t in model_inputs}
    missing = sorted(set(expected) - set(data.inputs))
    extra = sorted(set(data.inputs) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing array(s) for input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"array(s) {', '.join(extra)} match no model input")
        raise UsageError(
            f"{data.source} does not match the model: {'; '.join(parts)}",
            hint=f"the model's inputs are {', '.join(expected)}; name labels with --labels",
        )
    out: dict[str, np.ndarray] = {}
    for name, tensor in expected.items():
        array = data.inputs[name]
        want = numpy_dtype(tensor.datatype)
        if array.dtype != want:
            if _kind(array.dtype) != _kind(want):
                raise UsageError(
                    f"{data.source}: array {name!r} is {array.dtype}, the model wants {want}",
                    hint="save the array with the model's element type",
                )
            array = array.astype(want)
        if array.ndim != len(tensor.shape):
            raise UsageError(
                f"{data.source}: array {name!r} has shape {array.shape}, the model wants rank "
                f"{len(tensor.shape)} {_shape_text(tensor.shape)} (examples along axis 0)",
            )
        for axis, (have, need) in enumerate(zip(array.shape[1:], tensor.shape[1:], strict=True), start=1):
            if need != -1 and have != need:
                raise UsageError(
                    f"{data.source}: array {name!r} has shape {array.shape}, the model wants "
                    f"{_shape_text(tensor.shape)} (axis {axis} differs)",
                )
        out[name] = np.ascontiguousarray(array)
    return Dataset(inputs=out, labels=data.labels, source=data.source, groups=data.groups)


def _kind(dtype: np.dtype) -> str:
    return "int" if dtype.kind in "iu" else dtype.kind


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"


def split(data: Dataset, calibration_fraction: float = 0.25, max_calibration: int = 256, seed: int = 0) -> Split:
    """Shuffle once with ``seed`` and cut: the first part calibrates, the rest evaluates."""
    n = len(data)
    if n < 2:
        raise UsageError(
            f"{data.source} holds {n} example(s); at least 2 are needed (one to calibrate, one to judge)",
            hint="pass more evaluation data; a few hundred examples give a steady figure",
        )
    if not 0.0 < calibration_fraction < 1.0:
        raise UsageError(f"calibration fraction must be between 0 and 1, got {calibration_fraction}")
    n_cal = min(max(1, round(n * calibration_fraction)), max_calibration, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    # Sorting within each part keeps the original example order, which makes reports readable.
    cal, ev = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    return Split(
        calibration=data.take(cal),
        evaluation=data.take(ev),
        calibration_indices=cal,
        evaluation_indices=ev,
        seed=seed,
    )
