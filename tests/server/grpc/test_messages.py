"""HTTP's JSON answers as Triton's gRPC messages: every key lands in a field or in parameters."""

from __future__ import annotations

from leanserve.server.grpc import messages
from leanserve.stats import ModelStats


def test_config_fills_tritons_fields_and_keeps_leanserves_keys_as_parameters() -> None:
    doc = {
        "name": "m",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [1, 3]}},
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [{"name": "y", "data_type": "TYPE_FP16", "dims": [4, 2]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 500, "preferred_batch_size": [4], "max_queue_size": 64},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "default_model_filename": "model.onnx",
        "parameters": {"intra_op_threads": 2, "providers": ["CPUExecutionProvider"]},
        "metadata": {"description": "d"},
        "load": "on_demand",
        "label": None,
    }
    config = messages.model_config(doc).config
    assert (config.name, config.platform, config.max_batch_size) == ("m", "onnxruntime_onnx", 8)
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert (config.input[0].name, list(config.input[0].dims)) == ("x", [-1])
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "intra_op_threads": "2",
        "providers": '["CPUExecutionProvider"]',
        "metadata": '{"description":"d"}',
        "load": "on_demand",
        "label": "null",
    }
    assert "max_queue_size" in doc["dynamic_batching"]  # the handlers' answer is not changed


def test_statistics_keep_tritons_fields_and_leave_leanserves_own() -> None:
    stats = ModelStats("m", 2, memory_bytes=1024)
    stats.record_request("success", 0.002)
    stats.record_batch(3, 0.001)
    (entry,) = messages.model_statistics([stats.triton_dict()]).model_stats
    assert (entry.name, entry.version, entry.inference_count, entry.execution_count) == ("m", "2", 3, 1)
    assert entry.inference_stats.success.count == 1 and entry.inference_stats.success.ns == 2_000_000
    assert [(b.batch_size, b.compute_infer.count) for b in entry.batch_stats] == [(3, 1)]
    assert entry.memory_usage[0].byte_size == 1024


def test_index_entries_without_a_reason_have_an_empty_one() -> None:
    entries = [{"name": "m", "version": "1", "state": "READY", "reason": None, "load": "always"}]
    (model,) = messages.repository_index(entries).models
    assert (model.name, model.version, model.state, model.reason) == ("m", "1", "READY", "")
