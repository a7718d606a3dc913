from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leanserve.errors import UsageError
from leanserve.optimization.data import conform, from_arrays, load_data, split
from leanserve.runtimes import EngineTensor

INPUTS = (EngineTensor("x", "FP32", (-1, 4)),)


def test_load_npz_and_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((10, 4)), labels=np.arange(10))
    data = load_data(tmp_path / "d.npz", labels="labels")
    assert len(data) == 10 and set(data.inputs) == {"x"}
    assert data.labels is not None and data.labels.tolist() == list(range(10))


def test_load_folder_concatenates_in_name_order(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", x=np.full((3, 4), 2.0))
    np.savez(tmp_path / "a.npz", x=np.full((2, 4), 1.0))
    data = load_data(tmp_path)
    assert data.inputs["x"][:, 0].tolist() == [1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"y": np.ones((5, 4), np.float32)}, "missing array"),
        ({"x": np.ones((5, 4), np.float32), "z": np.ones((5, 1))}, "match no model input"),
        ({"x": np.ones((5, 3), np.float32)}, "axis 1 differs"),
        ({"x": np.ones((5, 4, 1), np.float32)}, "rank"),
        ({"x": np.array([["a"] * 4] * 5)}, "the model wants float32"),
    ],
)
def test_arrays_that_do_not_match_the_model_are_clear_errors(arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        conform(from_arrays(arrays), INPUTS)


def test_conform_casts_within_a_kind() -> None:
    data = conform(from_arrays({"x": np.ones((5, 4), np.float64)}), INPUTS)
    assert data.inputs["x"].dtype == np.float32


def test_missing_file_and_missing_labels(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_data(tmp_path / "nope.npz")
    np.savez(tmp_path / "d.npz", x=np.ones((3, 4)))
    with pytest.raises(UsageError, match="no array named 'lab'"):
        load_data(tmp_path / "d.npz", labels="lab")


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 3, dtype=object))
    with pytest.raises(UsageError, match="pickled"):
        load_data(tmp_path / "d.npz")


def test_lengths_must_agree() -> None:
    with pytest.raises(UsageError, match="disagree"):
        from_arrays({"x": np.ones((3, 4)), "labels": np.ones(4)}, labels="labels")


@pytest.mark.parametrize("n", [2, 3, 10, 101, 2000])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 7])
def test_split_never_overlaps_and_covers_everything(n: int, fraction: float, seed: int) -> None:
    data = from_arrays({"x": np.arange(n * 4, dtype=np.float32).reshape(n, 4), "labels": np.arange(n)}, "labels")
    s = split(data, fraction, seed=seed)
    cal, ev = set(s.calibration_indices.tolist()), set(s.evaluation_indices.tolist())
    assert not cal & ev
    assert cal | ev == set(range(n))
    assert len(s.calibration) >= 1 and len(s.evaluation) >= 1
    # The arrays follow the indices, labels included.
    assert s.evaluation.labels is not None
    assert s.evaluation.labels.tolist() == s.evaluation_indices.tolist()
    assert (s.calibration.inputs["x"][:, 0] // 4).tolist() == s.calibration_indices.tolist()


def test_split_is_deterministic_and_caps_calibration() -> None:
    data = from_arrays({"x": np.zeros((1000, 4), np.float32)})
    a, b = split(data, 0.5, max_calibration=100, seed=3), split(data, 0.5, max_calibration=100, seed=3)
    assert a.calibration_indices.tolist() == b.calibration_indices.tolist()
    assert len(a.calibration) == 100 and len(a.evaluation) == 900


def test_split_needs_two_examples() -> None:
    with pytest.raises(UsageError, match="at least 2"):
        split(from_arrays({"x": np.zeros((1, 4))}))


def test_groups_stay_apart_from_the_inputs_and_follow_their_examples_through_the_split(tmp_path: Path) -> None:
    language = np.array(["ko", "en", "fr", "ko"] * 5)
    # Row i holds i in its first column, so every example can be traced after the split.
    x = np.repeat(np.arange(20, dtype=np.float32)[:, None], 4, axis=1)
    np.savez(tmp_path / "d.npz", x=x, language=language)
    data = conform(load_data(tmp_path / "d.npz", groups="language"), INPUTS)
    assert set(data.inputs) == {"x"} and data.groups is not None
    parts = split(data, 0.25)
    for part in (parts.calibration, parts.evaluation):
        assert part.groups is not None
        rows = part.inputs["x"][:, 0].astype(int)
        assert part.groups.tolist() == language[rows].tolist()


@pytest.mark.parametrize(
    ("groups", "labels", "match"),
    [
        ("segment", None, "no array named 'segment' for the groups"),
        ("grid", None, "1-D array"),
        ("labels", "labels", "both the labels and the groups"),
    ],
)
def test_bad_groups_are_clear_errors(groups: str, labels: str | None, match: str) -> None:
    arrays = {"x": np.ones((6, 4), np.float32), "grid": np.zeros((6, 2)), "labels": np.arange(6)}
    with pytest.raises(UsageError, match=match):
        from_arrays(arrays, labels=labels, groups=groups)
