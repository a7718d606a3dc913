"""What each endpoint answers, without HTTP: statuses, bodies and headers from the handlers alone."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from leanserve.errors import ModelNotReady, Overloaded, Unauthorized
from leanserve.protocol import Limits
from leanserve.registry import ModelRegistry
from leanserve.router import InferBody, RequestContext, Router
from leanserve.server.handlers import Handlers, Reply, arm_header, error_reply
from tests.fixtures.onnx_models import write_marked_model


def test_errors_carry_their_status_message_hint_and_headers() -> None:
    reply = error_reply(ModelNotReady("model 'm' is loading", hint="retry shortly", retry_after=3))
    assert reply.status == 503 and reply.headers == ((b"retry-after", b"3"),)
    assert orjson.loads(reply.body) == {"error": "model 'm' is loading (retry shortly)"}
    assert error_reply(Overloaded("queue full", retry_after=1)).headers == ((b"retry-after", b"1"),)
    assert error_reply(Unauthorized("needs a token")).headers == ((b"www-authenticate", b"Bearer"),)


@pytest.fixture
async def handlers(tmp_path: Path) -> Handlers:
    write_marked_model(tmp_path / "m" / "1" / "model.onnx", 9.0, weight_mib=0.05)
    (tmp_path / "m" / "model.toml").write_text('load = "on_demand"\n')
    registry = ModelRegistry(tmp_path)
    await registry.load_all()
    yield Handlers(registry, Router(registry, Limits()))  # type: ignore[misc]
    await registry.close()


async def test_an_unloaded_model_has_metadata_and_is_not_ready_with_its_reason(handlers: Handlers) -> None:
    meta = orjson.loads(handlers.model_metadata("m", None).body)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["state"] == "UNAVAILABLE" and meta["parameters"]["load"] == "on_demand"
    ready = handlers.model_ready("m", None)
    assert ready.status == 503 and b"not loaded (on demand)" in ready.body
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]})
    reply: Reply = await handlers.infer_async(RequestContext("r1"), "m", None, InferBody(body))
    assert reply.status == 200 and orjson.loads(reply.body)["outputs"][0]["data"] == [9.0]
    assert handlers.model_ready("m", None).status == 200


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [(b"", 200, ["m"]), (b'{"ready": true}', 200, []), (b'{"ready": false}', 200, ["m"]), (b"[1]", 400, None)],
)
def test_repository_index_filters_by_readiness(handlers: Handlers, body: bytes, status: int, names: object) -> None:
    reply = handlers.repository_index(body)
    assert reply.status == status
    if names is not None:
        assert [e["name"] for e in orjson.loads(reply.body)] == names


def test_the_arm_header_is_made_once_per_arm() -> None:
    assert arm_header("digits:2") == ((b"x-leanserve-arm", b"digits:2"),)
    assert arm_header("digits:2") is arm_header("digits:2")  # shared by the arm's answers
