"""Request and response types of the Open Inference Protocol, independent of any wire format.

Names follow tritonclient's (`InferInput`, `InferRequestedOutput`, `InferResult`) so that
users of Triton recognise them. Tensors are decoded to numpy arrays at the boundary; nothing
past the codecs sees JSON or raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Parameters = dict[str, Any]


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)


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
