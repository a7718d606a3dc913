"""Repository discovery, version policy and auto-complete from the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve.config import TensorSpec, version_number
from leanserve.errors import ConfigError, InvalidInput
from leanserve.repository import resolve_version, safe_model_name, scan_repository
from tests.fixtures.onnx_models import write_mlp


def model(root: Path, name: str, versions: tuple[int, ...] = (1,), toml: str | None = None, **kw: object) -> Path:
    for v in versions:
        write_mlp(root / name / str(v) / "model.onnx", **kw)  # type: ignore[arg-type]
    if toml is not None:
        (root / name / "model.toml").write_text(toml)
    return root / name


def test_auto_complete_from_onnx_alone(tmp_path: Path) -> None:
    model(tmp_path, "mlp", in_dim=4, out_dim=3)
    (entry,) = scan_repository(tmp_path).models
    spec = resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]
    assert spec.config.max_batch_size == 32  # every first dimension is variable: the model batches
    assert spec.config.inputs == (TensorSpec("x", "FP32", (4,)),)
    assert spec.config.outputs == (TensorSpec("y", "FP32", (3,)),)
    assert spec.path == tmp_path / "mlp" / "1" / "model.onnx"


def test_fixed_batch_dimension_means_no_batching(tmp_path: Path) -> None:
    model(tmp_path, "fixed", batch_dynamic=False)
    (entry,) = scan_repository(tmp_path).models
    spec = resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]
    assert spec.config.max_batch_size == 0
    assert spec.config.inputs[0].shape == (1, 4)


def test_declared_config_that_matches_is_kept(tmp_path: Path) -> None:
    model(tmp_path, "mlp", toml='max_batch_size = 4\n[[input]]\nname = "x"\ndatatype = "FP32"\nshape = [4]\n')
    (entry,) = scan_repository(tmp_path).models
    spec = resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]
    assert spec.config.max_batch_size == 4
    assert spec.config.outputs[0].name == "y"  # completed


@pytest.mark.parametrize(
    ("toml", "field", "reason"),
    [
        ('[[input]]\nname = "nope"\n', "input[0].name", "'nope' is not a input"),
        ('[[input]]\nname = "x"\ndatatype = "INT64"\n', "input[0].datatype", "declares INT64 but model.onnx has FP32"),
        ('[[input]]\nname = "x"\nshape = [5]\n', "input[0].shape", "declares [5] but model.onnx has [4]"),
    ],
)
def test_contradictions_name_file_field_and_reason(tmp_path: Path, toml: str, field: str, reason: str) -> None:
    bad = model(tmp_path, "bad", toml=toml)
    (entry,) = scan_repository(tmp_path).models
    with pytest.raises(ConfigError) as info:
        resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]
    assert info.value.path == str(bad / "model.toml")
    assert info.value.field == field
    assert reason in info.value.reason


def test_max_batch_size_with_a_fixed_batch_dimension_is_an_error(tmp_path: Path) -> None:
    model(tmp_path, "fixed", toml="max_batch_size = 8\n", batch_dynamic=False)
    (entry,) = scan_repository(tmp_path).models
    with pytest.raises(ConfigError, match=r"max_batch_size: is 8 but model\.onnx has 'x' with fixed first dimension"):
        resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]


def test_a_bad_model_toml_leaves_the_other_models_alone(tmp_path: Path) -> None:
    model(tmp_path, "good")
    model(tmp_path, "typo", toml="max_batch_sise = 8\n")
    model(tmp_path, "notoml", toml="max_batch_size = [\n")
    scan = scan_repository(tmp_path)
    by_name = {m.name: m for m in scan.models}
    assert by_name["good"].error is None
    assert by_name["typo"].error is not None and by_name["typo"].error.field == "max_batch_sise"
    assert "unknown field" in str(by_name["typo"].error)
    assert "not valid TOML" in str(by_name["notoml"].error)
    assert len(scan.errors) == 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", (3,)),
        ('version_policy = "all"\n', (1, 2, 3)),
        ('[version_policy]\npolicy = "latest"\nnum_versions = 2\n', (2, 3)),
        ('[version_policy]\npolicy = "specific"\nversions = [1, 3]\n', (1, 3)),
    ],
)
def test_version_policy(tmp_path: Path, policy: str, expected: tuple[int, ...]) -> None:
    model(tmp_path, "mlp", versions=(1, 2, 3), toml=policy)
    (entry,) = scan_repository(tmp_path).models
    assert entry.versions == expected


def test_non_version_entries_and_hidden_folders_are_ignored(tmp_path: Path) -> None:
    d = model(tmp_path, "mlp", versions=(1, 2))
    (d / "report.html").write_text("<html/>")
    (d / "eval.npz").write_bytes(b"")
    (d / "01").mkdir()
    (d / "0").mkdir()
    (d / "\u00b2").mkdir()  # superscript 2: a digit to str.isdigit(), not to int()
    (d / "notes").mkdir()
    (tmp_path / ".staging").mkdir()
    (entry,) = scan_repository(tmp_path).models
    assert entry.name == "mlp"
    assert entry.versions == (2,)


def test_missing_version_folder_or_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "nofile" / "1").mkdir(parents=True)
    by_name = {m.name: m for m in scan_repository(tmp_path).models}
    assert "no version folder" in str(by_name["empty"].error)
    entry = by_name["nofile"]
    with pytest.raises(ConfigError, match="model file not found"):
        resolve_version(entry.directory, entry.config, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", "a\x00b", ".hidden", "x" * 300])
def test_unsafe_model_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        safe_model_name(name)


def test_safe_model_names() -> None:
    for name in ("digits", "minilm-v2", "resnet_50", "a.b"):
        assert safe_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "number"),
    [
        *[("1", 1), ("42", 42), ("0", None), ("01", None), ("007", None), ("-1", None), ("+1", None)],
        *[("1.0", None), ("\u00b2", None), ("\u0661", None), ("", None), (" 1", None)],  # superscript 2, Arabic 1
    ],
)
def test_only_canonical_positive_integers_are_version_folders(name: str, number: int | None) -> None:
    assert version_number(name) == number
