"""PyTorch classifier -> fp32 ONNX with dynamic batch and sequence axes.

Uses the TorchScript-based exporter: its BERT graphs are the ones ONNX Runtime's quantizer
and TensorRT's parser handle best, and it needs no example-shape specialisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def export_onnx(model: nn.Module, out: Path, max_length: int) -> Path:
    model = model.eval()
    ids = torch.ones((2, min(16, max_length)), dtype=torch.long)
    mask = torch.ones_like(ids)

    class _Logits(nn.Module):
        # Return a bare tensor so the graph has exactly one output named "logits".
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model),
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return out
