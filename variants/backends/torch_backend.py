"""PyTorch backend: the slimgate classifier rebuilt from config.json + safetensors, on CPU or CUDA.

The weights are read with ``safetensors`` directly, never with ``torch.load``, so nothing is
unpickled; they are the checksummed files :func:`variants.load_variant` verified. The model is
then cast to the requested precision (fp32, bf16; fp16 on CUDA only) and moved to the requested
device. Asked for CUDA where there is none, opening fails with :class:`BackendUnavailable`
naming the reason: it never runs on CPU instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from variants.backends import TORCH_PRECISIONS, BackendUnavailable
from variants.hardware import cuda_unavailable_reason
from variants.modeling import classifier_from_config

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_model(folder: Path) -> torch.nn.Module:
    """The fp32 CPU model of ``folder`` (weights stored in a lower precision are upcast): slimgate's
    pooled classifier, or a Hugging Face sequence classifier (a fine-tuned teacher and its students)."""
    model = classifier_from_config(AutoConfig.from_pretrained(folder))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def check_placement(device: str, precision: str) -> None:
    """Refuse a device/precision pair this machine or this backend cannot run, with the reason."""
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"the torch backend computes in {list(TORCH_PRECISIONS)}, not {precision!r}")
    if device == "cpu" and precision == "fp16":
        raise ValueError("fp16 runs on device 'cuda' only; on CPU use fp32 or bf16")
    if device == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"torch backend on device 'cuda' unavailable: {reason}")


class TorchBackend:
    def __init__(self, model: torch.nn.Module, threads: int, device: str = "cpu") -> None:
        self.model = model
        self.threads = threads
        self.device = torch.device(device)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask)
        # fp32 on the host whatever the compute precision: softmax and the label table are shared.
        return out.logits.float().cpu().numpy()


def open(
    folder: Path, files: list[str], threads: int, *, device: str = "cpu", precision: str | None = None
) -> TorchBackend:
    if "model.safetensors" not in files:
        raise ValueError(f"{folder}: a torch variant needs model.safetensors")
    precision = precision or "fp32"
    check_placement(device, precision)  # before reading weights: a refusal costs nothing
    model = build_model(folder).to(device=device, dtype=DTYPES[precision])
    return TorchBackend(model, threads, device)
