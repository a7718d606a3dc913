"""A model's handlers and engine run in the caller's thread, as the server runs one batch: no queues.

``leanserve optimize --requests`` times each variant this way (so its latency includes what the
handlers cost, as clients will see it), and the text benchmark uses it as the in-process loop a
server is compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import split_rows
from ..config import ModelConfig, load_model_config
from ..errors import UsageError
from ..runtimes import Runtime
from .handler import Handler, as_tensors, handler_config, load_handler
from .ragged import Padding, pad_batch, with_mask

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """What a processed model does to a batch of requests, runnable on any engine of the model."""

    handler: Handler | None
    padding: Padding | None
    engine_inputs: frozenset[str]

    @classmethod
    def of(cls, model_dir: Path, config: ModelConfig | None = None, version: int = 1) -> EndToEnd:
        config = config or load_model_config(model_dir)
        hc = handler_config(config, model_dir)
        handler = load_handler(model_dir, version, hc) if hc is not None else None
        return cls(handler, Padding.of(config.inputs), frozenset(s.name for s in config.inputs))

    def run(self, runtime: Runtime, requests: Sequence[Tensors]) -> list[Tensors]:
        """One batch of requests in, each request's outputs out (what a client would receive)."""
        handler = self.handler
        prepared: list[Tensors] = list(requests)
        if handler is not None and handler.preprocess is not None:
            prepared = [as_tensors(p, "preprocess") for p in handler.preprocess(prepared)]
        extras = [{n: a for n, a in p.items() if n not in self.engine_inputs} for p in prepared]
        parts = [{n: a for n, a in p.items() if n in self.engine_inputs} for p in prepared]
        if self.padding is not None:
            parts = [with_mask(p, self.padding) for p in parts]
            inputs = pad_batch(parts, self.padding)
        else:
            inputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        rows = [len(next(iter(p.values()))) for p in parts]
        outputs = [{**e, **o} for e, o in zip(extras, split_rows(runtime.run(inputs), rows), strict=True)]
        if handler is not None and handler.postprocess is not None:
            outputs = [as_tensors(o, "postprocess") for o in handler.postprocess(outputs, list(requests))]
        return outputs

    def runner(self, runtime: Runtime, requests: Sequence[Tensors]) -> Callable[[], object]:
        return lambda: self.run(runtime, requests)


def read_requests(source: Path | Mapping[str, np.ndarray], inputs: Sequence[str]) -> list[Tensors]:
    """Requests of one row each: from an .npz (or arrays) with one array per public input, or from a
    folder of files, each one request's single BYTES input (images: PNG files)."""
    if isinstance(source, Path) and source.is_dir():
        if len(inputs) != 1:
            raise UsageError(f"a folder of requests needs a model with one input, not {len(inputs)}")
        files = sorted(p for p in source.iterdir() if p.is_file())
        if not files:
            raise UsageError(f"{source} holds no request files")
        return [{inputs[0]: np.array([p.read_bytes()], dtype=object)} for p in files]
    if isinstance(source, Path):
        try:
            with np.load(source) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read requests from {source}: {e}") from e
    else:
        arrays = dict(source)
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise UsageError(f"the requests lack {', '.join(map(repr, missing))}", hint=f"inputs: {', '.join(inputs)}")
    columns = {n: _bytes_if_text(arrays[n]) for n in inputs}
    count = len(next(iter(columns.values())))
    return [{n: a[i : i + 1] for n, a in columns.items()} for i in range(count)]


def _bytes_if_text(array: np.ndarray) -> np.ndarray:
    """Text in an .npz is fixed-width unicode; the server hands handlers BYTES as objects holding bytes."""
    if array.dtype.kind == "U":
        return np.array([s.encode() for s in array.reshape(-1)], dtype=object).reshape(array.shape)
    if array.dtype.kind == "S":
        return np.array(list(array.reshape(-1)), dtype=object).reshape(array.shape)
    return array


__all__ = ["EndToEnd", "read_requests"]
