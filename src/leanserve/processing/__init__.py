"""Models that take real inputs: in-process handlers, ragged batching, pipelines.

A model directory may hold ``handler.py`` (batch-level ``preprocess`` / ``postprocess``), declare
ragged inputs (``pad_value``, ``mask``) and pipeline steps in ``model.toml``. Such a version is
served by a :class:`Processor` (:mod:`.pipeline`): each step on its own thread (:mod:`.stages`),
ragged batches padded to their longest member (:mod:`.ragged`), the requests that share one
chosen by cost (:mod:`.grouping`). A model with none of these never
reaches this package: the router sends its requests straight to its batcher.
"""

from .handler import Handler, handler_config, load_handler, needs_processing
from .pipeline import CallModel, Processor, model_caller
from .ragged import Padding, pad_batch, ragged_key, ragged_length

__all__ = [
    "CallModel",
    "Handler",
    "Padding",
    "Processor",
    "handler_config",
    "load_handler",
    "model_caller",
    "needs_processing",
    "pad_batch",
    "ragged_key",
    "ragged_length",
]
