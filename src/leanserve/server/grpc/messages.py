"""What HTTP answers as JSON (:class:`~leanserve.server.handlers.Handlers`' ``*_doc`` methods), as gRPC messages.

Each answer is computed once, by the handlers; here it only changes shape. Where Triton's
message has a field for a key, the key goes there; leanserve's own keys that Triton's messages
lack (a version's load policy, measured memory, provenance, runtime options) go into
``ModelConfig.parameters`` as text (JSON for anything but a string), so nothing HTTP says is lost.
``ModelMetadataResponse`` has no parameters field: leanserve's metadata parameters (state, load
policy, memory) are HTTP's only.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2

# Fields of Triton's ModelConfig that triton_config's keys fill directly.
_CONFIG_FIELDS: Final = frozenset(f.name for f in model_config_pb2.ModelConfig.DESCRIPTOR.fields)


def model_metadata(doc: dict[str, Any]) -> Any:
    response = service_pb2.ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"])
    for tensor in doc["inputs"]:
        response.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    for tensor in doc["outputs"]:
        response.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response


def model_config(doc: dict[str, Any]) -> Any:
    """A ``ModelConfigResponse`` from :func:`~leanserve.server.triton_config.triton_config`'s form."""
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "parameters":
            extra.update(value)
        elif key in _CONFIG_FIELDS:
            known[key] = value
        else:
            extra[key] = value
    batching = known.get("dynamic_batching")
    if batching is not None and "max_queue_size" in batching:
        # Triton keeps the queue bound in the queue policy, not in dynamic_batching itself.
        batching = dict(batching)
        known["dynamic_batching"] = batching
        batching["default_queue_policy"] = {"max_queue_size": batching.pop("max_queue_size")}
    config = json_format.ParseDict(known, model_config_pb2.ModelConfig())
    for key, value in extra.items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        config.parameters[key].string_value = text
    return service_pb2.ModelConfigResponse(config=config)


def model_statistics(docs: list[dict[str, object]]) -> Any:
    """A ``ModelStatisticsResponse``; the entries' leanserve-only keys (loads, outcomes, ...) are HTTP's."""
    response = service_pb2.ModelStatisticsResponse()
    for doc in docs:
        json_format.ParseDict(doc, response.model_stats.add(), ignore_unknown_fields=True)
    return response


def repository_index(entries: list[dict[str, Any]]) -> Any:
    response = service_pb2.RepositoryIndexResponse()
    for entry in entries:
        response.models.add(
            name=entry["name"], version=entry["version"], state=entry["state"], reason=entry["reason"] or ""
        )
    return response


__all__ = ["model_config", "model_metadata", "model_statistics", "repository_index"]
