"""Bounds on what one inference request may make the server parse and allocate."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import PayloadTooLarge, UsageError


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    # Applies to the ``parameters`` objects, the only free-form JSON a request carries; orjson
    # itself refuses documents nested deeper than 1024 levels, and nested tensor data can be no
    # deeper than its declared shape.
    max_json_depth: int = 32
    max_tensor_elements: int = 16_777_216
    max_inputs: int = 256  # also the most requested outputs

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise UsageError(f"Limits.{f.name} must be a positive integer, got {value!r}")


def too_many_elements(where: str, count: int, max_elements: int) -> PayloadTooLarge:
    """The error for a tensor whose declared shape holds more than ``max_tensor_elements``.

    Every codec checks the count from the declared shape before it allocates anything.
    """
    return PayloadTooLarge(
        f"{where}: {count} elements exceed the limit of {max_elements} per tensor",
        hint="split the request into smaller ones",
    )
