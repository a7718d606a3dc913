"""Handlers run in the caller's thread: what optimize --requests times, equal to what the server answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leanserve.config import RuntimeOptions
from leanserve.errors import UsageError
from leanserve.processing.offline import EndToEnd, read_requests
from leanserve.runtimes import load_runtime
from tests.processing.models import expected_mean, write_repository


def test_a_batch_runs_through_preprocess_engine_and_postprocess(tmp_path: Path) -> None:
    repo = write_repository(tmp_path)
    e2e = EndToEnd.of(repo / "chars")
    texts = np.array(["short", "a longer one", "x"])
    requests = read_requests({"text": texts}, ["text"])
    assert requests[0]["text"].dtype == object and requests[0]["text"][0] == b"short"
    runtime = load_runtime(repo / "chars" / "1" / "model.onnx", "onnxruntime", RuntimeOptions())
    try:
        outputs = e2e.run(runtime, requests)
    finally:
        runtime.close()
    for text, out in zip(texts, outputs, strict=True):
        np.testing.assert_allclose(out["mean"][0], expected_mean(str(text)), rtol=1e-5, atol=1e-6)


def test_requests_from_a_folder_of_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(bytes([i]) * 5)
    requests = read_requests(tmp_path, ["png"])
    assert [r["png"][0] for r in requests] == [bytes([i]) * 5 for i in range(3)]
    with pytest.raises(UsageError):
        read_requests({"other": np.zeros(2)}, ["png"])


@pytest.mark.slow
def test_optimize_with_requests_times_the_model_through_its_handlers(tmp_path: Path) -> None:
    import leanserve
    from tests.processing.models import token_ids

    repo = write_repository(tmp_path)
    texts = [f"sentence number {i} " + "x" * (i % 17) for i in range(40)]
    longest = max(len(token_ids(t)) for t in texts)
    ids = np.zeros((len(texts), longest), np.int64)
    mask = np.zeros_like(ids)
    for row, text in enumerate(texts):
        ids[row, : len(token_ids(text))] = token_ids(text)
        mask[row, : len(token_ids(text))] = 1
    common = {
        "data": {"input_ids": ids, "attention_mask": mask},
        "metric": "cosine",
        "repo": repo,
        "name": "chars",
        "variants": ["ort-fp32-opt"],
        "quick": True,
        "fallback": False,
    }
    engine_only = leanserve.optimize(repo / "chars" / "1" / "model.onnx", **common)  # type: ignore[arg-type]
    through = leanserve.optimize(
        repo / "chars" / "1" / "model.onnx",
        requests={"text": np.array(texts)},
        **common,  # type: ignore[arg-type]
    )
    e2e = [v.measurements for v in through.variants if v.measurements is not None]
    plain = [v.measurements for v in engine_only.variants if v.measurements is not None]
    assert e2e and all(m.end_to_end for m in e2e) and not any(m.end_to_end for m in plain)
    # Tokenizing in Python, padding and the postprocess cost more than the tiny engine alone.
    assert min(m.latency.p50_ms for m in e2e) > min(m.latency.p50_ms for m in plain)
    with pytest.raises(UsageError):
        leanserve.optimize(
            repo / "plain" / "1" / "model.onnx",
            data={"x": np.zeros((8, 4), np.float32)},
            repo=repo,
            name="plain",
            requests={"x": np.zeros((8, 4), np.float32)},
            quick=True,
        )
