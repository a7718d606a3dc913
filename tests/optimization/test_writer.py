from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from leanserve.config import DynamicBatching, RuntimeOptions, load_model_config
from leanserve.errors import ConfigError
from leanserve.optimization.writer import VersionEntry, write_versions
from leanserve.repository import scan_repository


def _entry(tmp_path: Path, label: str, platform: str = "onnxruntime") -> VersionEntry:
    folder = tmp_path / "src" / label
    folder.mkdir(parents=True)
    files = (folder / "model.xml", folder / "model.bin") if platform == "openvino" else (folder / "model.onnx",)
    for f in files:
        f.write_bytes(label.encode())
    runtime = RuntimeOptions(intra_op_threads=2, providers=("openvino:CPU:bf16",) if platform == "openvino" else ())
    return VersionEntry(
        label,
        files,
        platform,
        runtime,
        32,
        DynamicBatching(max_queue_delay_ms=0.5),
        {"method": label, "metric_value": 0.99, "nothing": None, "settings": {"per_channel": True, "x": (1, 2)}},
    )


def test_writes_versions_with_default_last_and_merges(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "model.toml").write_text(
        'max_batch_size = 8\n[metadata]\nowner = "me"\n[[input]]\nname = "x"\ndatatype = "FP32"\nshape = [4]\n'
    )
    entries = [_entry(tmp_path, "original"), _entry(tmp_path, "fast"), _entry(tmp_path, "ov", "openvino")]
    numbers = write_versions(repo, "m", entries, default_label="fast")
    assert numbers == {"original": 2, "ov": 3, "fast": 4}
    config = load_model_config(repo / "m")
    assert config.default_version == 4
    assert config.metadata == {"owner": "me"} and config.inputs[0].name == "x" and config.max_batch_size == 8
    assert config.version_policy.kind == "specific" and config.version_policy.versions == (2, 3, 4)
    ov = config.for_version(3)
    assert ov.platform == "openvino" and ov.model_filename() == "model.xml"
    assert ov.runtime.providers == ("openvino:CPU:bf16",) and ov.runtime.intra_op_threads == 2
    assert (repo / "m" / "3" / "model.bin").read_bytes() == b"ov"
    assert config.versions[4].label == "fast" and config.versions[4].provenance["metric_value"] == 0.99
    raw = tomllib.loads((repo / "m" / "model.toml").read_text())
    assert "nothing" not in raw["versions"]["4"]["provenance"]


def test_second_run_appends_and_keeps_a_users_policy(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_versions(repo, "m", [_entry(tmp_path, "original")], default_label="original")
    text = (repo / "m" / "model.toml").read_text().replace('policy = "specific"', 'policy = "all"')
    text = text.replace("versions = [\n    1,\n]\n", "")
    (repo / "m" / "model.toml").write_text(text)
    numbers = write_versions(repo, "m", [_entry(tmp_path, "again")], default_label="again")
    assert numbers == {"again": 2}
    config = load_model_config(repo / "m")
    assert config.default_version == 2 and config.version_policy.kind == "all" and set(config.versions) == {1, 2}


def test_bad_name_is_refused(tmp_path: Path) -> None:
    from leanserve.errors import UsageError

    with pytest.raises(UsageError):
        write_versions(tmp_path, "../x", [_entry(tmp_path, "a")], "a")


@pytest.mark.parametrize(("planned", "served_max", "preferred"), [(1, 8, ()), (4, 8, (4,)), (64, 64, (64,))])
def test_the_planned_batch_never_lowers_what_a_request_may_send(
    tmp_path: Path, planned: int, served_max: int, preferred: tuple[int, ...]
) -> None:
    # A sweep that finds batch 1 best (MiniLM on OpenVINO) must not turn a 2-sentence request
    # into a 400: the plan steers the batcher, the model's max_batch_size stays the request limit.
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "model.toml").write_text("max_batch_size = 8\n")
    entry = replace(_entry(tmp_path, "v"), batch_size=planned)
    write_versions(repo, "m", [entry], default_label="v")
    version = load_model_config(repo / "m").for_version(1)
    assert version.max_batch_size == served_max
    assert version.dynamic_batching.preferred_batch_sizes == preferred


def test_folders_the_repository_ignores_do_not_number_new_versions(tmp_path: Path) -> None:
    # "01" and "0" are no versions to the server, so they must not push the numbering either:
    # the written version is 1, and the server finds it.
    repo = tmp_path / "repo"
    for folder in ("0", "01", "007"):
        (repo / "m" / folder).mkdir(parents=True)
    numbers = write_versions(repo, "m", [_entry(tmp_path, "original")], default_label="original")
    assert numbers == {"original": 1}
    (entry,) = scan_repository(repo).models
    assert entry.error is None and entry.versions == (1,)


def test_every_setting_of_a_version_reads_back(tmp_path: Path) -> None:
    runtime = RuntimeOptions(3, 2, ("CPUExecutionProvider",), "basic", allow_spinning=False)
    batching = DynamicBatching(max_queue_delay_ms=1.5, max_queue_size=64, adaptive_batch_size=False)
    entry = replace(_entry(tmp_path, "v"), runtime=runtime, dynamic_batching=batching, batch_size=4)
    write_versions(tmp_path / "repo", "m", [entry], default_label="v")
    version = load_model_config(tmp_path / "repo" / "m").for_version(1)
    assert version.runtime == runtime
    assert version.dynamic_batching == replace(batching, preferred_batch_sizes=(4,))


def test_a_users_mistake_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "model.toml").write_text("[runtime]\nthreads = 2\n")
    with pytest.raises(ConfigError) as caught:
        write_versions(repo, "m", [_entry(tmp_path, "v")], default_label="v")
    assert caught.value.field == "runtime.threads"
    assert not (repo / "m" / "1").exists()
    assert (repo / "m" / "model.toml").read_text() == "[runtime]\nthreads = 2\n"
