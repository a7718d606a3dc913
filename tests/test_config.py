"""model.toml: every field parses to its typed value, and every mistake names the file, the field and the reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from leanserve.config import (
    DynamicBatching,
    RuntimeOptions,
    VersionPolicy,
    load_model_config,
    parse_model_config,
)
from leanserve.errors import ConfigError

FULL = """
max_batch_size = 16
default_version = 2
platform = "onnxruntime"
version_policy = "all"

[[input]]
name = "image"
datatype = "FP32"
shape = [1, 8, -1]

[[output]]
name = "logits"
datatype = "FP32"
shape = [10]

[dynamic_batching]
max_queue_delay_ms = 2.5
preferred_batch_sizes = [16, 4]
max_queue_size = 100
adaptive_batch_size = false

[runtime]
intra_op_threads = 2
inter_op_threads = 1
providers = ["CPUExecutionProvider"]
graph_optimization = "basic"
allow_spinning = false

[metadata]
description = "a CNN"

[versions.3]
platform = "openvino"
model_file = "model.xml"
max_batch_size = 8
label = "ov-bf16"
[versions.3.runtime]
intra_op_threads = 1
[versions.3.provenance]
method = "openvino"
"""


def parse(text: str) -> object:
    return parse_model_config(tomllib.loads(text), "digits", "models/digits/model.toml")


def test_every_field_is_read() -> None:
    c = parse_model_config(tomllib.loads(FULL), "digits", "models/digits/model.toml")
    assert c.max_batch_size == 16 and c.default_version == 2 and c.batching
    assert c.version_policy == VersionPolicy(kind="all")
    assert [(t.name, t.datatype, t.shape) for t in c.inputs] == [("image", "FP32", (1, 8, -1))]
    assert c.outputs[0].shape == (10,)
    assert c.dynamic_batching == DynamicBatching(2.5, (4, 16), 100, adaptive_batch_size=False)
    assert c.runtime == RuntimeOptions(2, 1, ("CPUExecutionProvider",), "basic", allow_spinning=False)
    assert c.metadata == {"description": "a CNN"}
    assert c.model_filename() == "model.onnx"


def test_a_version_override_applies_to_that_version_only() -> None:
    c = parse_model_config(tomllib.loads(FULL), "digits", "models/digits/model.toml")
    v3 = c.for_version(3)
    assert (v3.platform, v3.model_filename(), v3.max_batch_size) == ("openvino", "model.xml", 8)
    assert v3.runtime.intra_op_threads == 1
    assert c.versions[3].label == "ov-bf16" and c.versions[3].provenance == {"method": "openvino"}
    assert c.for_version(2) is c


def test_defaults_when_the_file_is_absent(tmp_path: Path) -> None:
    c = load_model_config(tmp_path / "mlp")
    assert c.name == "mlp" and c.max_batch_size is None and c.inputs == ()
    assert c.dynamic_batching.max_queue_delay_ms == 0.0  # a lone request never waits
    assert c.runtime.allow_spinning


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("max_batch_sise = 4", "max_batch_sise", "unknown field"),
        ("max_batch_size = -1", "max_batch_size", "at least 0"),
        ("max_batch_size = true", "max_batch_size", "expected an integer"),
        ('name = "other"', "name", "differs from the model's folder name"),
        ('platform = "tensorflow"', "platform", "not one of"),
        ('model_file = "../x.onnx"', "model_file", "plain file name"),
        ("[[input]]\ndatatype = 'FP32'", "input[0].name", "missing"),
        ("[[input]]\nname = 'x'\ndatatype = 'FP31'", "input[0].datatype", "not one of"),
        ("[[input]]\nname = 'x'\nshape = [1, 0]", "input[0].shape", "positive or -1"),
        ("[[output]]\nname = 'y'\n[[output]]\nname = 'y'", "output[1].name", "duplicate output name"),
        ("max_batch_size = 4\n[dynamic_batching]\npreferred_batch_sizes = [8]", "preferred_batch_sizes", "exceeds"),
        ("[dynamic_batching]\nmax_queue_delay_ms = -1", "dynamic_batching.max_queue_delay_ms", "at least"),
        ("[runtime]\nallow_spinning = 'yes'", "runtime.allow_spinning", "true or false"),
        ("[runtime]\ngraph_optimization = 'max'", "runtime.graph_optimization", "not one of"),
        ("[version_policy]\npolicy = 'specific'", "version_policy.versions", "non-empty list"),
        ("[version_policy]\nversions = [1]", "version_policy.versions", "only used with policy 'specific'"),
        ("[versions.x]\nlabel = 'a'", "versions.x", "positive integers"),
        ("[versions.2]\nthreads = 1", "versions.2.threads", "unknown field"),
    ],
)
def test_mistakes_name_the_file_the_field_and_the_reason(text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    error = caught.value
    assert error.path == "models/digits/model.toml"
    assert error.field is not None and field in error.field
    assert reason in str(error)


def test_toml_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "mlp").mkdir()
    (tmp_path / "mlp" / "model.toml").write_text("max_batch_size = = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_model_config(tmp_path / "mlp")
