"""Request and response types of the Open Inference Protocol, independent of any wire format.

Names follow tritonclient's (`InferInput`, `InferRequestedOutput`, `InferResult`) so that
users of Triton recognise them. Tensors are decoded to numpy arrays at the boundary; nothing
past the codecs sees JSON or raw bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ..errors import InvalidInput, UsageError
from .datatypes import DATATYPES, datatype_of

Parameters = dict[str, Any]
_DATATYPES: Final = frozenset(DATATYPES)


class InferInput:
    """One input tensor, as tritonclient builds it: ``InferInput(name, shape, datatype)``, then
    :meth:`set_data_from_numpy` (or the array as ``data`` right away).

    Everything is checked when it is set, so that a wrong tensor fails where it is made, not
    when the server answers 400. The codecs build inputs they have checked already with
    :meth:`_decoded`, which skips the checks: it runs once per tensor of every request.
    """

    __slots__ = ("_data", "datatype", "name", "parameters", "shape")

    name: str
    shape: tuple[int, ...]
    datatype: str
    parameters: Parameters

    def __init__(
        self,
        name: str,
        shape: Sequence[int],
        datatype: str,
        data: np.ndarray | None = None,
        parameters: Parameters | None = None,
    ) -> None:
        if type(name) is not str or not name:
            raise UsageError(f"an input needs a non-empty name string, got {name!r:.60}")
        if type(datatype) is not str or datatype not in _DATATYPES:
            raise UsageError(
                f"input {name!r}: unknown datatype {datatype!r:.40}", hint=f"use one of {', '.join(DATATYPES)}"
            )
        self.name = name
        self.datatype = datatype
        self.shape = _shape(name, shape)
        self.parameters = {} if parameters is None else parameters
        self._data: np.ndarray | None = None
        if data is not None:
            self.set_data_from_numpy(data)

    @classmethod
    def _decoded(
        cls, name: str, shape: tuple[int, ...], datatype: str, data: np.ndarray, parameters: Parameters
    ) -> InferInput:
        """An input whose every part a codec has checked against the request: no checks again."""
        inp = cls.__new__(cls)
        inp.name = name
        inp.shape = shape
        inp.datatype = datatype
        inp._data = data
        inp.parameters = parameters
        return inp

    def set_data_from_numpy(self, array: np.ndarray) -> InferInput:
        """Set the tensor's values; the array must have this input's shape and datatype."""
        if not isinstance(array, np.ndarray):
            raise UsageError(f"input {self.name!r}: data must be a numpy array, got {type(array).__name__}")
        try:
            datatype = datatype_of(array)
        except InvalidInput as e:
            raise UsageError(f"input {self.name!r}: {e.message}") from None
        if datatype != self.datatype:
            raise UsageError(f"input {self.name!r}: datatype is {self.datatype} but the array holds {array.dtype}")
        if array.shape != self.shape:
            raise UsageError(f"input {self.name!r}: shape is {list(self.shape)} but the array has {list(array.shape)}")
        self._data = array
        return self

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            raise UsageError(f"input {self.name!r} has no data", hint="call set_data_from_numpy(array)")
        return self._data

    def __repr__(self) -> str:
        state = "no data" if self._data is None else "data set"
        return f"InferInput({self.name!r}, {list(self.shape)}, {self.datatype!r}, {state})"


def _shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    # numpy integers are ints here (array.shape, np.int64 from arithmetic); bools are not.
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise UsageError(f"input {name!r}: shape must be a sequence of non-negative integers, got {shape!r:.60}")
    dims = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise UsageError(f"input {name!r}: shape must hold non-negative integers, got {list(shape)!r:.60}")
        dims.append(int(d))
    return tuple(dims)


@dataclass(frozen=True, slots=True)
class InferRequestedOutput:
    name: str
    binary_data: bool = False
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    inputs: list[InferInput]
    outputs: list[InferRequestedOutput] | None = None  # None: every output of the model
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    # Binary output for every output unless an output says otherwise (`binary_data_output`).
    binary_data_output: bool = False


@dataclass(slots=True)
class InferOutput:
    name: str
    data: np.ndarray
    binary_data: bool = False
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferResult:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)

    def as_numpy(self, name: str) -> np.ndarray | None:
        """The output called ``name``, or None when the result holds none (as tritonclient's)."""
        for output in self.outputs:
            if output.name == name:
                return output.data
        return None
