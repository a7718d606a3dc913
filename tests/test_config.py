"""model.toml: every field parses to its typed value, and every mistake names the file, the field and the reason."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Literal

import pytest
import tomli_w

from leanserve.config import (
    DynamicBatching,
    ModelConfig,
    RuntimeOptions,
    VersionOverrides,
    VersionPolicy,
    from_table,
    load_model_config,
    parse_model_config,
    to_table,
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


def parse(text: str) -> ModelConfig:
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
    # Threads and spinning left to the measured-cost policy (runtimes.threads).
    assert c.runtime.intra_op_threads == 0 and c.runtime.allow_spinning is None


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


# ---- the dataclasses are the schema: one reader, one writer -------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        RuntimeOptions(),
        RuntimeOptions(3, 0, ("CUDAExecutionProvider", "CPUExecutionProvider"), "extended", allow_spinning=False),
        DynamicBatching(),
        DynamicBatching(1.5, (2, 8), 10, adaptive_batch_size=False),
        VersionOverrides(),
        VersionOverrides(
            platform="openvino",
            model_file="model.xml",
            runtime=RuntimeOptions(intra_op_threads=1, providers=("openvino:CPU:bf16",)),
            max_batch_size=0,
            dynamic_batching=DynamicBatching(max_queue_delay_ms=0.5, preferred_batch_sizes=(4,)),
            label="ov",
            provenance={"method": "openvino", "settings": {"ratio": 0.5}},
        ),
    ],
    ids=repr,
)
def test_a_table_written_reads_back_equal(value: object) -> None:
    text = tomli_w.dumps(to_table(value))
    assert from_table(type(value), tomllib.loads(text), "model.toml", "x") == value


def test_a_whole_model_config_reads_back_equal() -> None:
    config = parse_model_config(tomllib.loads(FULL + 'load = "on_demand"\n'), "digits", "models/digits/model.toml")
    config = replace(config, memory_bytes=300 << 20)
    text = tomli_w.dumps(to_table(config))
    assert parse_model_config(tomllib.loads(text), "digits", "models/digits/model.toml") == config


def test_top_level_keys_that_differ_from_field_names() -> None:
    c = parse("load = 'on_demand'\nmemory = '300MiB'\n[[input]]\nname = 'x'\n[[output]]\nname = 'y'")
    assert c.load == "on_demand" and c.memory_bytes == 300 << 20
    assert (c.inputs[0].name, c.outputs[0].name) == ("x", "y")
    table = to_table(c)
    assert table["memory"] == 300 << 20 and table["input"] == [{"name": "x"}] and "source" not in table


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('load = "sometimes"', "load", "not one of always, on_demand"),
        ('memory = "lots"', "memory", "is not a size"),
        ("memory = 0", "memory", "positive size"),
        ("source = 'x'", "source", "unknown field"),
    ],
)
def test_load_and_memory_mistakes(text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.field == field and reason in str(caught.value)


def test_unknown_fields_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("[runtime]\nthreads = 2")
    assert caught.value.field == "runtime.threads"
    assert caught.value.hint == (
        "known fields: allow_spinning, graph_optimization, inter_op_threads, intra_op_threads, providers, timeout_ms"
    )


@dataclass(frozen=True, slots=True)
class _Cache:
    mode: Literal["lru", "fifo"]
    size: int = field(default=8, metadata={"minimum": 1})
    tags: tuple[str, ...] = field(default=(), metadata={"key": "tag", "sort": True})
    ratio: float | None = None


def test_a_new_dataclass_needs_nothing_but_its_fields() -> None:
    read = from_table(_Cache, {"mode": "fifo", "tag": ["b", "a"], "ratio": 1}, "x.toml", "cache")
    assert read == _Cache("fifo", 8, ("a", "b"), 1.0)
    assert to_table(read) == {"mode": "fifo", "size": 8, "tag": ["a", "b"], "ratio": 1.0}
    for table, where, reason in [
        ({}, "cache.mode", "missing"),
        ({"mode": "random"}, "cache.mode", "'random' is not one of lru, fifo"),
        ({"mode": "lru", "size": 0}, "cache.size", "must be at least 1"),
        ({"mode": "lru", "tag": [1]}, "cache.tag[0]", "expected a non-empty string"),
        ({"mode": "lru", "tags": []}, "cache.tags", "unknown field"),
    ]:
        with pytest.raises(ConfigError) as caught:
            from_table(_Cache, table, "x.toml", "cache")
        assert (caught.value.path, caught.value.field) == ("x.toml", where) and reason in str(caught.value)


def test_a_field_added_to_a_dataclass_is_read_and_written() -> None:
    extended = make_dataclass(
        "Extended",
        [("arena_mb", int, field(default=0, metadata={"minimum": 0}))],
        bases=(RuntimeOptions,),
        frozen=True,
    )
    read = from_table(extended, {"arena_mb": 64, "intra_op_threads": 2}, "model.toml", "runtime")
    assert (read.arena_mb, read.intra_op_threads) == (64, 2)
    assert to_table(read)["arena_mb"] == 64
    with pytest.raises(ConfigError, match=r"runtime\.arena_mb: must be at least 0"):
        from_table(extended, {"arena_mb": -1}, "model.toml", "runtime")


def test_a_misspelt_schema_key_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Bad:
        size: int = field(default=1, metadata={"minimun": 1})

    with pytest.raises(TypeError, match="minimun"):
        from_table(Bad, {}, "x.toml")
