"""Text -> token ids, identical for training, evaluation and serving.

Every variant folder carries the teacher's ``tokenizer.json``; this wraps the Rust
``tokenizers`` library (no Python per-token work) with the variant's truncation length and
pads each batch to its longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


def _pad_token(tok: Tokenizer) -> dict:
    # The tokenizer's own padding token where its file names one (RoBERTa's <pad> is id 1), else
    # the usual names; padding is always to the batch's longest text.
    own = tok.padding
    if own:
        return {"pad_id": own["pad_id"], "pad_token": own["pad_token"]}
    for token in ("[PAD]", "<pad>"):
        pad_id = tok.token_to_id(token)
        if pad_id is not None:
            return {"pad_id": pad_id, "pad_token": token}
    return {"pad_id": 0, "pad_token": "[PAD]"}


class TextEncoder:
    def __init__(self, path: Path, max_length: int) -> None:
        tok = Tokenizer.from_file(str(path))
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(**_pad_token(tok))
        self._tok = tok
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: Path, max_length: int) -> TextEncoder:
        return cls(folder / TOKENIZER_FILE, max_length)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """int64 input_ids and attention_mask, shape [len(texts), longest]."""
        encs = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        return ids, mask

    def unpadded(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated but not padded (for length-bucketed training batches)."""
        return [e.ids[: sum(e.attention_mask)] for e in self._tok.encode_batch(list(texts))]
