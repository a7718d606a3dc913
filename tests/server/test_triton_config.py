"""triton_config: a version's configuration under the field names Triton's users and tools know."""

from __future__ import annotations

import tomllib
from dataclasses import fields

from leanserve.config import ModelConfig, RuntimeOptions, parse_model_config
from leanserve.server.triton_config import triton_config

TOML = """
max_batch_size = 16
default_version = 2
load = "on_demand"
memory = "300MiB"

[[input]]
name = "text"
datatype = "BYTES"
shape = [-1]

[[output]]
name = "logits"
datatype = "FP32"
shape = [10]

[dynamic_batching]
max_queue_delay_ms = 2.5
preferred_batch_sizes = [8, 4]
max_queue_size = 100

[runtime]
intra_op_threads = 2
graph_optimization = "basic"

[metadata]
owner = "me"

[versions.2]
platform = "openvino"
model_file = "model.xml"
label = "ov-fp32"
[versions.2.provenance]
method = "openvino"
"""


def _config() -> ModelConfig:
    return parse_model_config(tomllib.loads(TOML), "digits", "models/digits/model.toml")


def test_every_field_under_its_triton_name() -> None:
    config = _config()
    assert triton_config(config, 1, ["CPUExecutionProvider"], "on_demand", 1234) == {
        "name": "digits",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 16,
        "input": [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": 2500,
            "preferred_batch_size": [4, 8],
            "max_queue_size": 100,
        },
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "default_model_filename": "model.onnx",
        "parameters": {
            "intra_op_threads": 2,
            "inter_op_threads": 1,
            "providers": ["CPUExecutionProvider"],
            "graph_optimization": "basic",
            "allow_spinning": None,  # not in model.toml: decided at load with the threads
            "timeout_ms": 0.0,
        },
        "metadata": {"owner": "me"},
        "default_version": 2,
        "load": "on_demand",
        "memory_bytes": 1234,
        "version": 1,
        "label": None,
        "provenance": {},
    }


def test_a_version_shows_its_engine_label_and_provenance() -> None:
    config = _config()
    triton = triton_config(config.for_version(2), 2, ("openvino:CPU:f32",), "always", 0)
    assert (triton["platform"], triton["backend"], triton["default_model_filename"]) == (
        "openvino",
        "openvino",
        "model.xml",
    )
    assert triton["label"] == "ov-fp32" and triton["provenance"] == {"method": "openvino"}
    assert triton["version"] == 2 and triton["parameters"]["providers"] == ["openvino:CPU:f32"]


def test_the_providers_shown_are_those_loaded_not_those_asked_for() -> None:
    config = parse_model_config({"runtime": {"providers": ["CUDAExecutionProvider"]}}, "m", "model.toml")
    assert triton_config(config, 1, [], "always", 0)["parameters"]["providers"] == []


def test_every_runtime_option_is_a_parameter() -> None:
    parameters = triton_config(ModelConfig(name="m"), 1, [], "always", 0)["parameters"]
    assert set(parameters) == {f.name for f in fields(RuntimeOptions)}


def test_version_policies() -> None:
    def policy(table: dict[str, object] | str) -> object:
        config = parse_model_config({"version_policy": table}, "m", "model.toml")
        return triton_config(config, 1, [], "always", 0)["version_policy"]

    assert policy("all") == {"all": {}}
    assert policy({"policy": "latest", "num_versions": 2}) == {"latest": {"num_versions": 2}}
    assert policy({"policy": "specific", "versions": [1, 3]}) == {"specific": {"versions": [1, 3]}}


def test_a_model_that_does_not_batch_has_max_batch_size_zero() -> None:
    assert triton_config(ModelConfig(name="m"), 1, [], "always", 0)["max_batch_size"] == 0
