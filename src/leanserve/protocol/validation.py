"""Checks of a decoded inference request against a model's signature."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from .types import InferRequest

if TYPE_CHECKING:  # config imports protocol.datatypes: a runtime import here would be circular
    from ..config import TensorSpec


def validate_request(
    request: InferRequest, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_batch_size: int
) -> int:
    """The request's batch size (0 when the model does not batch); InvalidInput if it does not fit.

    With batching, each input's shape is ``[n, *spec.shape]`` with the same ``1 <= n <=
    max_batch_size`` for every input; ``-1`` in a spec matches any size.
    """
    if len(inputs) == 1 and len(request.inputs) == 1 and request.outputs is None:
        # Most models take one input: checked without the mappings below. Anything amiss goes
        # the general way, which says what.
        sent, declared = request.inputs[0], inputs[0]
        shape = sent.shape
        if sent.name == declared.name and sent.datatype == declared.datatype:
            if max_batch_size > 0:
                if (
                    len(shape) == len(declared.shape) + 1
                    and 1 <= shape[0] <= max_batch_size
                    and _matches(shape[1:], declared.shape)
                ):
                    return shape[0]
            elif len(shape) == len(declared.shape) and _matches(shape, declared.shape):
                return 0
    specs = {spec.name: spec for spec in inputs}
    batching = max_batch_size > 0
    batch_size = 0
    batch_source = ""
    seen: set[str] = set()
    for inp in request.inputs:
        # The message's "input 'x'" is made where an error needs it: this loop runs for every request.
        if inp.name in seen:
            raise InvalidInput(f"{_where(inp.name)} appears more than once in the request")
        seen.add(inp.name)
        spec = specs.get(inp.name)
        if spec is None:
            raise InvalidInput(f"unknown {_where(inp.name)}", hint=f"the model's inputs are {_names(specs)}")
        if inp.datatype != spec.datatype:
            raise InvalidInput(f"{_where(inp.name)}: expected datatype {spec.datatype}, got {inp.datatype}")
        shape = inp.shape
        if batching:
            if len(shape) != len(spec.shape) + 1 or not _matches(shape[1:], spec.shape):
                expected = "[n, " + ", ".join(map(str, spec.shape)) + "]" if spec.shape else "[n]"
                raise InvalidInput(
                    f"{_where(inp.name)}: expected shape {expected} with n the batch size, got {list(shape)}",
                    hint="-1 in the expected shape matches any size",
                )
            rows = shape[0]
            if not 1 <= rows <= max_batch_size:
                raise InvalidInput(
                    f"{_where(inp.name)}: batch size {rows} is outside 1..{max_batch_size}",
                    hint=f"send at most {max_batch_size} rows per request",
                )
            if not batch_source:
                batch_size, batch_source = rows, inp.name
            elif rows != batch_size:
                raise InvalidInput(
                    f"{_where(inp.name)}: batch size {rows} differs from input {batch_source!r}'s {batch_size}",
                    hint="every input must have the same first dimension",
                )
        elif len(shape) != len(spec.shape) or not _matches(shape, spec.shape):
            raise InvalidInput(
                f"{_where(inp.name)}: expected shape {list(spec.shape)}, got {list(shape)}",
                hint="-1 in the expected shape matches any size",
            )
    if len(seen) != len(specs):
        missing = [name for name in specs if name not in seen]
        raise InvalidInput(
            f"missing input {missing[0]!r}"
            if len(missing) == 1
            else "missing inputs " + ", ".join(repr(name) for name in missing),
            hint=f"the model's inputs are {_names(specs)}",
        )
    if request.outputs is not None:
        output_names = {spec.name for spec in outputs}
        requested: set[str] = set()
        for out in request.outputs:
            if out.name not in output_names:
                raise InvalidInput(
                    f"unknown requested output {out.name!r}",
                    hint=f"the model's outputs are {_names([spec.name for spec in outputs])}",
                )
            if out.name in requested:
                raise InvalidInput(f"output {out.name!r} is requested more than once")
            requested.add(out.name)
    return batch_size


def _where(name: str) -> str:
    return f"input {name!r}"


def _matches(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # Equal tuples first: the common case, without a generator per request.
    return shape == expected or all(want == -1 or got == want for got, want in zip(shape, expected, strict=True))


def _names(names: Collection[str]) -> str:
    return ", ".join(repr(name) for name in names) if names else "(none)"
