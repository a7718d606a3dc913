"""Handlers end to end: a real server, real HTTP, a real ONNX graph and handler files on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from tests.processing.models import VOCAB, expected_mean, token_ids, write_repository
from tests.server.conftest import RunningServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = RunningServer(write_repository(tmp_path_factory.mktemp("processed")), grpc_port=0).start()
    yield running
    running.stop()


def _text(texts: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def _infer(server: RunningServer, model: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=timeout)


def _output(response: httpx.Response, name: str) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = next(o for o in response.json()["outputs"] if o["name"] == name)
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_text_in_runs_the_handlers_and_the_engine(server: RunningServer) -> None:
    texts = ["hello", "a much longer sentence than the first one"]
    got = _output(_infer(server, "chars", _text(texts)), "mean")
    np.testing.assert_allclose(got, np.stack([expected_mean(t) for t in texts]), rtol=1e-5, atol=1e-6)


def test_metadata_shows_what_clients_send(server: RunningServer) -> None:
    meta = httpx.get(f"{server.url}/v2/models/chars").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "mean", "datatype": "FP32", "shape": [-1, 4]}]
    assert [t["name"] for t in meta["parameters"]["engine_inputs"]] == ["input_ids", "attention_mask"]


def test_requests_of_different_lengths_share_a_batch_and_equal_each_alone(server: RunningServer) -> None:
    rng = np.random.default_rng(0)
    texts = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(n))) for n in rng.integers(1, 40, 48)]
    before = httpx.get(f"{server.url}/v2/models/chars/stats").json()["model_stats"][0]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: _infer(server, "chars", _text([t])), texts))
    for text, response in zip(texts, responses, strict=True):
        np.testing.assert_allclose(_output(response, "mean")[0], expected_mean(text), rtol=1e-5, atol=1e-6)
    after = httpx.get(f"{server.url}/v2/models/chars/stats").json()["model_stats"][0]
    runs = after["execution_count"] - before["execution_count"]
    assert after["inference_count"] - before["inference_count"] == len(texts)
    assert runs < len(texts), "no two requests shared an engine run"
    assert {"preprocess", "engine", "postprocess"} <= set(after["steps"])
    assert after["inference_stats"]["compute_input"]["count"] > 0


@pytest.mark.slow
def test_a_standing_queue_of_mixed_lengths_goes_into_few_runs_each_answer_its_own(server: RunningServer) -> None:
    def runs() -> int:
        return int(httpx.get(f"{server.url}/v2/models/queued/stats").json()["model_stats"][0]["execution_count"])

    # Runs of many sizes, one at a time, teach the engine what a run costs: for this tiny graph, the
    # same whatever its tokens (Python's share dwarfs the engine's), so padding is all but free.
    # (60 runs: a few preempted ones on a loaded machine must not make long runs look dear.)
    for i in range(60):
        texts = ["x" * (1 + (7 * i + 3 * k) % 60) for k in range(1 + i % 4)]
        assert _infer(server, "queued", _text(texts)).status_code == 200
    rng = np.random.default_rng(1)
    # 12 to 20 characters: power-of-two groups would split them at 16/17 into two runs per batch.
    texts = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(n))) for n in rng.integers(12, 21, 24)]
    assert {len(t) <= 16 for t in texts} == {True, False}
    before = runs()
    with ThreadPoolExecutor(25) as pool:
        # The handler sleeps on "hang2": meanwhile the 24 sentences queue, then reach the engine together
        # (16, the model's max_batch_size, then 8).
        held = pool.submit(_infer, server, "queued", _text(["hang2"]))
        time.sleep(0.2)
        responses = list(pool.map(lambda t: _infer(server, "queued", _text([t])), texts))
        assert held.result().status_code == 200
    used = runs() - before
    alone = [_output(_infer(server, "queued", _text([t])), "mean")[0] for t in texts]
    for text, response, single in zip(texts, responses, alone, strict=True):
        got = _output(response, "mean")[0]
        np.testing.assert_allclose(got, expected_mean(text), rtol=1e-5, atol=1e-6)
        assert float(got @ single / np.linalg.norm(got) / np.linalg.norm(single)) > 0.9999
    assert used <= 3, f"the held request and 24 queued sentences took {used} engine runs (at most 1 + 2 expected)"


def test_token_ids_are_a_second_entry_point_and_the_mask_is_built(server: RunningServer) -> None:
    ids = token_ids("token ids")
    body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, len(ids)], "data": ids}]}
    got = _output(_infer(server, "chars", body), "mean")
    np.testing.assert_allclose(got[0], expected_mean("token ids"), rtol=1e-5, atol=1e-6)
    wrong = {"inputs": [{"name": "input_ids", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    assert _infer(server, "chars", wrong).status_code == 400
    assert max(ids) < VOCAB


def test_a_handler_raising_invalid_input_is_a_400_for_that_request_only(server: RunningServer) -> None:
    bad = _infer(server, "chars", _text(["bad"]))
    assert bad.status_code == 400
    assert "the text 'bad' is not accepted" in bad.json()["error"]
    assert _infer(server, "chars", _text(["good"])).status_code == 200


def test_a_handler_bug_is_a_500_for_the_culprit_and_the_batch_neighbours_succeed(server: RunningServer) -> None:
    texts = ["boom" if i % 5 == 0 else f"fine {i}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda t: _infer(server, "chars", _text([t])), texts))
    for text, response in zip(texts, responses, strict=True):
        if text == "boom":
            assert response.status_code == 500
            assert "RuntimeError: the handler broke" in response.json()["error"]
        else:
            np.testing.assert_allclose(_output(response, "mean")[0], expected_mean(text), rtol=1e-5, atol=1e-6)
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    failures = httpx.get(f"{server.url}/v2/logs/failures", params={"model": "chars", "status": 500}).json()
    assert failures  # logged with the request id, as every failed request is


def test_a_hanging_handler_times_out_and_the_model_keeps_answering(server: RunningServer) -> None:
    # (Generous bounds: this 2-core machine is shared, and a plain request can take 0.3 s under load.)
    start = time.monotonic()
    hung = _infer(server, "slow", _text(["hang20"]))
    assert hung.status_code == 504, hung.text
    assert time.monotonic() - start < 12.0  # timeout_ms = 400, long before the handler's 20 s sleep ends
    # The hung call's thread was left behind: a fresh one serves the next request, not after the sleep.
    start = time.monotonic()
    assert _infer(server, "slow", _text(["after"])).status_code == 200
    assert time.monotonic() - start < 8.0


def test_a_pipeline_is_one_model_with_a_histogram_per_step(server: RunningServer) -> None:
    texts = ["pipeline", "steps"]
    got = _output(_infer(server, "pipe", _text(texts)), "y")
    plain = httpx.post(
        f"{server.url}/v2/models/plain/infer",
        json={
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "data": (2.0 * np.stack([expected_mean(t) for t in texts])).ravel().tolist(),
                }
            ]
        },
    )
    np.testing.assert_allclose(got, _output(plain, "y"), rtol=1e-4, atol=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").text
    for step in ("preprocess", "engine", "postprocess", "scale", "model:plain"):
        assert f'leanserve_step_duration_seconds_count{{model="pipe",step="{step}",version="1"}}' in metrics, step


def test_the_callers_deadline_travels_through_the_steps(server: RunningServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_address)
    text = grpcclient.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hang20"], dtype=object))
    start = time.monotonic()
    with pytest.raises(InferenceServerException):
        client.infer("chars", [text], client_timeout=0.3)  # the model's own timeout is 30 s
    # The server answered the request 504 at its deadline, in the step where it was, not after 30 s.
    deadline = time.monotonic() + 12
    failures: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not failures:
        logged = httpx.get(f"{server.url}/v2/logs/failures", params={"model": "chars", "status": 504}).json()
        failures = [f for f in logged["failures"] if "passed its deadline in step 'preprocess'" in f["message"]]
        time.sleep(0.1)
    assert failures and time.monotonic() - start < 12.0  # long before the handler's 20 s sleep ends


def test_beyond_the_queue_size_a_503_says_retry(server: RunningServer) -> None:
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(_infer, server, "tight", _text(["hang20"]))  # holds the one place until its 3 s timeout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = httpx.get(f"{server.url}/v2/models/tight/stats").json()["model_stats"][0]
            if stats["in_flight"]:
                break
            time.sleep(0.02)
        refused = _infer(server, "tight", _text(["next"]))
        assert refused.status_code == 503 and refused.headers.get("retry-after") == "1", refused.text
        assert hung.result().status_code == 504
    assert _infer(server, "tight", _text(["after"])).status_code == 200
