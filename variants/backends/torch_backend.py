"""PyTorch backend: the slimgate classifier rebuilt from config.json + safetensors.

The weights are read with ``safetensors`` directly, never with ``torch.load``, so nothing is
unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from variants.modeling import TextClassifier


def build_model(folder: Path) -> TextClassifier:
    model = TextClassifier(AutoConfig.from_pretrained(folder))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


class TorchBackend:
    def __init__(self, model: torch.nn.Module, threads: int) -> None:
        self.model = model
        self.threads = threads

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
            )
        return out.logits.float().numpy()


def open(folder: Path, files: list[str], threads: int) -> TorchBackend:
    if "model.safetensors" not in files:
        raise ValueError(f"{folder}: a torch variant needs model.safetensors")
    return TorchBackend(build_model(folder), threads)
