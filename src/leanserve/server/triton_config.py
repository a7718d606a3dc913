"""A model version's configuration in Triton's JSON form, as ``GET /v2/models/<name>/config`` answers.

Triton users and their tools (tritonclient's ``get_model_config``) know these field names:
``data_type`` as ``TYPE_FP32``, ``dims``, ``max_queue_delay_microseconds``, ``instance_group``.
This module is the one translation from :mod:`leanserve.config`'s schema to them; where a
setting has no Triton name (the engine's runtime options) it is passed on under its
``model.toml`` key, so a field added there shows here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import DynamicBatching, ModelConfig, TensorSpec, VersionPolicy, to_table

_TRITON_PLATFORMS = {"onnxruntime": "onnxruntime_onnx"}  # the others keep their name


def triton_config(
    config: ModelConfig, version: int, providers: Sequence[str], load: str, memory_bytes: int
) -> dict[str, Any]:
    """The configuration of ``version`` in Triton's form.

    ``config`` is the version's configuration (its overrides applied, as the registry holds it);
    ``providers`` the engine's providers as loaded, ``load`` its load policy and ``memory_bytes``
    its measured or declared size.
    """
    overrides = config.versions.get(version)
    return {
        "name": config.name,
        "platform": _TRITON_PLATFORMS.get(config.platform, config.platform),
        "backend": config.platform,
        "version_policy": {config.version_policy.kind: _policy_body(config.version_policy)},
        "max_batch_size": config.max_batch_size or 0,
        "input": [_tensor(t) for t in config.inputs],
        "output": [_tensor(t) for t in config.outputs],
        "dynamic_batching": _dynamic_batching(config.dynamic_batching),
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "default_model_filename": config.model_filename(),
        # The providers the engine runs on, not those asked for (none asked: the best available).
        # Spinning left out of model.toml is null: the threads policy decides it at load.
        "parameters": {"allow_spinning": None, **to_table(config.runtime), "providers": list(providers)},
        "metadata": config.metadata,
        "default_version": config.default_version,
        "load": load,
        "memory_bytes": memory_bytes,
        "version": version,
        "label": overrides.label if overrides else None,
        "provenance": overrides.provenance if overrides else {},
    }


def _tensor(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "data_type": f"TYPE_{_triton_type(t.datatype)}", "dims": list(t.shape)}


def _dynamic_batching(d: DynamicBatching) -> dict[str, Any]:
    return {
        "max_queue_delay_microseconds": int(d.max_queue_delay_ms * 1000),
        "preferred_batch_size": list(d.preferred_batch_sizes),
        "max_queue_size": d.max_queue_size,
    }


def _policy_body(p: VersionPolicy) -> dict[str, Any]:
    if p.kind == "latest":
        return {"num_versions": p.num_versions}
    if p.kind == "specific":
        return {"versions": list(p.versions)}
    return {}


def _triton_type(datatype: str) -> str:
    """Triton's name for a protocol datatype, without ``TYPE_``: BYTES is Triton's STRING."""
    return "STRING" if datatype == "BYTES" else datatype
