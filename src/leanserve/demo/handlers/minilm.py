"""``minilm``'s handler: sentences (BYTES, Korean, English, any language) in, token ids to the engine.

Tokenized on the server with the ``tokenizer.json`` next to this file (the one all-MiniLM-L6-v2
ships; WordPiece, truncated at 128 tokens), the whole dynamic batch in one ``encode_batch`` call
(Rust, several threads, the GIL released). No padding here: each request gets only its own
tokens, and the server pads a batch only to its longest member (``pad_value`` in model.toml).
The graph pools and normalizes, so there is no postprocess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from leanserve import InvalidInput

MAX_LENGTH = 128

_tokenizer = Tokenizer.from_file(str(Path(__file__).with_name("tokenizer.json")))
_tokenizer.enable_truncation(MAX_LENGTH)
_tokenizer.no_padding()


def preprocess(requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    texts: list[str] = []
    counts: list[int] = []
    for request in requests:
        items = request["text"].reshape(-1)
        for item in items:
            texts.append(_text(item))
        counts.append(len(items))
    encodings = _tokenizer.encode_batch(texts)
    out: list[dict[str, np.ndarray]] = []
    start = 0
    for count in counts:
        mine = encodings[start : start + count]
        start += count
        longest = max(len(e.ids) for e in mine)
        ids = np.zeros((count, longest), dtype=np.int64)
        mask = np.zeros((count, longest), dtype=np.int64)
        for row, e in enumerate(mine):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _text(item: object) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("input 'text': a sentence is not UTF-8 text") from None
    return str(item)
