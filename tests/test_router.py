"""The router: one path from a request to a model, every outcome counted once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from leanserve.errors import LeanserveError
from leanserve.experiments import Arm, Experiment, ExperimentConfig
from leanserve.experiments.alias import Alias
from leanserve.protocol import InferResult, Limits
from leanserve.registry import ModelRegistry
from leanserve.router import InferBody, RequestContext, Router
from tests.fixtures.onnx_models import write_marked_model, write_reshape_to_two_rows

CTX = RequestContext("test-1")
GOOD = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


@pytest.fixture
async def router(tmp_path: Path) -> Router:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 7.0, weight_mib=0.05)
    (tmp_path / "lazy" / "1").mkdir(parents=True)
    write_marked_model(tmp_path / "lazy" / "1" / "model.onnx", 8.0, weight_mib=0.05)
    (tmp_path / "lazy" / "model.toml").write_text('load = "on_demand"\n')
    registry = ModelRegistry(tmp_path)
    await registry.load_all()
    yield Router(registry, Limits(max_body_bytes=4096))  # type: ignore[misc]
    await registry.close()


async def call(router: Router, name: str, body: bytes, version: str | None = None) -> InferResult:
    return await router.infer_async(CTX, name, version, InferBody(body))


async def test_a_request_is_answered_by_the_model_it_names(router: Router) -> None:
    result = await call(router, "m", GOOD)
    assert (result.model_name, result.model_version) == ("m", "1")
    assert result.outputs[0].data.tolist() == [[7.0]]
    assert await call(router, "lazy", GOOD) is not None  # loaded on the way


async def test_every_outcome_is_counted_once_including_decode_failures(router: Router) -> None:
    stats = router.registry.describe("m", None).stats
    await call(router, "m", GOOD)
    for bad in (b"{not json", orjson.dumps({"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32"}]})):
        with pytest.raises(LeanserveError):
            await call(router, "m", bad)
    with pytest.raises(LeanserveError, match="exceeds the limit"):
        await call(router, "m", b" " * 5000)
    assert stats.outcomes == {"success": 1, "client_error": 3, "server_error": 0}
    assert stats.in_flight == 0
    assert router.registry.describe("m", None).acquired == 0  # every acquire was released


async def test_requests_for_unknown_models_are_counted_apart(router: Router) -> None:
    with pytest.raises(LeanserveError, match="unknown model"):
        await call(router, "nope", GOOD)
    with pytest.raises(LeanserveError, match="no version 3"):
        await call(router, "m", GOOD, version="3")
    assert router.unrouted == {404: 2}


async def test_a_front_end_may_hand_over_a_request_it_decoded_itself(router: Router) -> None:
    import numpy as np

    from leanserve.protocol import InferInput, InferRequest

    x = InferInput("x", [1, 4], "FP32").set_data_from_numpy(np.ones((1, 4), np.float32))
    result = await router.infer_async(CTX, "m", None, InferRequest([x]))
    assert result.outputs[0].data.tolist() == [[7.0]]
    with pytest.raises(LeanserveError, match="expected shape"):
        bad = InferInput("x", [1, 2], "FP32").set_data_from_numpy(np.ones((1, 2), np.float32))
        await router.infer_async(CTX, "m", None, InferRequest([bad]))


async def test_every_failure_reaches_the_hook_with_its_context_and_resolved_version(router: Router) -> None:
    seen: list[tuple[str, str, str, int]] = []
    router.on_failure = lambda ctx, name, version, error: seen.append((ctx.request_id, name, version, error.status))
    await call(router, "m", GOOD)  # a success is not a failure
    for bad in (b"{not json", b" " * 5000):
        with pytest.raises(LeanserveError):
            await call(router, "m", bad)
    for name, version in (("nope", None), ("m", "3"), ("nope", "2")):
        with pytest.raises(LeanserveError):
            await call(router, name, GOOD, version)
    assert seen == [
        ("test-1", "m", "1", 400),  # decode failure: the version it would have run on
        ("test-1", "m", "1", 413),  # rejected before acquiring: the version resolved anyway
        ("test-1", "nope", "", 404),
        ("test-1", "m", "3", 404),  # as asked
        ("test-1", "nope", "2", 404),
    ]


async def test_a_failing_batch_reaches_the_hook_once(tmp_path: Path) -> None:
    write_reshape_to_two_rows(tmp_path / "two" / "1" / "model.onnx")
    registry = ModelRegistry(tmp_path)
    await registry.load_all()
    router = Router(registry, Limits())
    seen: list[tuple[str, int]] = []
    router.on_failure = lambda ctx, name, version, error: seen.append((name, error.status))
    try:
        with pytest.raises(LeanserveError):
            await call(router, "two", GOOD)  # one row: the engine's reshape to two rows fails
        assert seen == [("two", 500)]
        assert registry.describe("two", None).stats.responses_by_code() == {200: 0, 500: 1}
    finally:
        await registry.close()


# ---- experiment aliases ------------------------------------------------------------------------


def alias(router: Router, tmp_path: Path, mode: str, **fields: object) -> Alias:
    arms = (Arm("m", 1), Arm("lazy", 1))
    config = ExperimentConfig("ab", mode, arms, **fields)  # type: ignore[arg-type]
    found = Alias(Experiment.open(config, tmp_path / "experiments.sqlite3"))
    router.aliases["ab"] = found
    return found


async def test_an_alias_request_goes_to_the_arm_its_unit_is_assigned_and_the_answer_names_it(
    router: Router, tmp_path: Path
) -> None:
    ab = alias(router, tmp_path, "split", primary_metric="conversion")  # feedback: answers carry an id
    try:
        answers = {}
        for unit in ("alice", "bob", "carol", "dave", "erin", "frank"):
            ctx = RequestContext(f"r-{unit}", headers=(("x-leanserve-unit", unit),))
            result = await router.infer_async(ctx, "ab", None, InferBody(GOOD))
            arm = ab.experiment.choose_arm(unit)
            assert ctx.experiment == "ab" and ctx.arm == f"{arm.model}:1"
            assert (result.model_name, result.model_version, result.id) == ("ab", "1", f"r-{unit}")
            assert result.parameters == {"leanserve_arm": ctx.arm}
            answers[unit] = result.outputs[0].data.tolist()
        assert {str(a) for a in answers.values()} == {"[[7.0]]", "[[8.0]]"}  # m answers 7, lazy (loaded on the way) 8
        by_parameter = orjson.dumps({**orjson.loads(GOOD), "parameters": {"unit": "alice"}})
        result = await router.infer_async(RequestContext("p"), "ab", None, InferBody(by_parameter))
        assert result.outputs[0].data.tolist() == answers["alice"]
        ab.recorder.flush()  # the server does this every 100 ms
        status = ab.experiment.status()
        assert sum(a["requests"] for a in status["arms"]) == 7
        assert ab.successes == [ab.requests(0, "success"), ab.requests(1, "success")] and sum(ab.successes) == 7
        with pytest.raises(LeanserveError, match="no versions of its own"):
            await call(router, "ab", GOOD, version="1")
        with pytest.raises(LeanserveError, match="not valid JSON"):  # decoded again, and counted, by the arm
            await router.infer_async(RequestContext("bad"), "ab", None, InferBody(b"{nope"))
        assert ab.requests(0, "client_error") + ab.requests(1, "client_error") == 1
    finally:
        ab.experiment.close()


async def test_a_shadow_copy_leaves_after_the_control_answered_and_is_compared(router: Router, tmp_path: Path) -> None:
    mirror = alias(router, tmp_path, "shadow")
    in_flight_when_answered: list[int] = []
    try:
        done = asyncio.get_running_loop().create_future()

        def answered(result: InferResult | None, error: LeanserveError | None) -> None:
            in_flight_when_answered.append(mirror.copies_pending)
            done.set_result(result)

        router.infer(RequestContext("s"), "ab", None, InferBody(GOOD), answered)
        result = await done
        assert result.outputs[0].data.tolist() == [[7.0]] and in_flight_when_answered == [0]
        assert mirror.copies_pending == 1  # queued once the answer was out
        for _ in range(500):
            if mirror.copies_pending == 0:
                break
            await asyncio.sleep(0.01)
        mirror.recorder.flush()
        shadow = mirror.experiment.status()["shadow"]
        assert (shadow["mirrored"], shadow["compared"], shadow["agreement"]["estimate"]) == (1, 1, 0.0)  # 7 vs 8
        assert mirror.copies == {"success": 1}
    finally:
        mirror.experiment.close()


@pytest.mark.parametrize("processed", [False, True], ids=["plain", "processed"])
async def test_a_bug_while_reading_a_request_is_a_500_that_releases_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processed: bool
) -> None:
    from leanserve.processing import Processor
    from tests.processing.models import write_repository

    registry = ModelRegistry(write_repository(tmp_path))
    await registry.load_all()
    try:
        router = Router(registry, Limits())
        name = "chars" if processed else "plain"
        if processed:
            monkeypatch.setattr(Processor, "validate", lambda self, request: 1 / 0)
        else:
            monkeypatch.setattr("leanserve.router.validate_request", lambda *args: 1 / 0)
        body = orjson.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
        with pytest.raises(LeanserveError, match="internal error while reading the request: ZeroDivisionError") as e:
            await call(router, name, body)
        assert e.value.status == 500
        stats = registry.describe(name, None).stats
        assert stats.outcomes["server_error"] == 1 and stats.in_flight == 0
        assert registry.describe(name, None).acquired == 0
    finally:
        await registry.close()
