"""The GPU check: teacher and student in fp32, fp16 and bf16 on one device, against CPU fp32.

Two steps, because the machine with the GPU has PyTorch (CUDA), transformers, safetensors,
tokenizers and numpy but no pydantic, no Ray, no network, and only 64 MiB may travel to it:

1. ``export`` (here, where the project is installed) writes what travels into an ignored folder:
   the first N texts of the test split already tokenized, the registry's CPU fp32 predictions of
   the teacher and the student on them (through ``load_variant``: checksums verified), and both
   models' weights in fp16, their word-embedding tables cut to the tokens those texts use (ids
   remapped; every other weight whole, so compute per text is unchanged). It refuses to write
   more than 64 MiB. ::

       PYTHONPATH=. .venv/bin/python benchmarks/gpu_check.py export --out .gpu_check [--registry DIR]

2. ``run`` (on the device; imports only torch, transformers, safetensors, numpy and the standard
   library: nothing of ``variants`` or ``serving``) prints the device name and, for each model,
   precision and batch size, the p50 latency of one batch, throughput (texts/s at that p50) and
   agreement with the CPU fp32 predictions, then student-fp16 ÷ teacher-fp32 throughput. fp16 is
   skipped on CPU, with the reason. Tokenization is excluded (done at export): these are model
   figures. ``--small`` (few texts, batches 1 and 32, few repeats) is the CPU smoke run. ::

       python benchmarks/gpu_check.py run --data .gpu_check --device cuda --json $OUT/gpu_check.json
       PYTHONPATH=. .venv/bin/python benchmarks/gpu_check.py run --data .gpu_check --small --device cpu

The fp32 rows run the fp16-rounded weights upcast, so their agreement includes the weight rounding
that every fp16 variant carries too; the fp16 target (agreement >= 0.999) is the recipe's
``cuda.min_agreement``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

LIMIT_BYTES = 64 * 1024 * 1024
MODELS = ("teacher", "student")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP16_TARGET = 0.999
EMBEDDINGS = "encoder.embeddings.word_embeddings.weight"


# -- export (runs where the project is installed) ----------------------------------------------
def export(registry: str | None, out: Path, n: int, names: dict[str, str]) -> int:
    from variants import Registry, load_variant
    from variants.dataset import load_dataset
    from variants.tokenization import TextEncoder

    reg = Registry(registry)
    texts = load_dataset().test.subsample(n, seed=0).texts
    manifests = {role: reg.verify(name) for role, name in names.items()}
    tokenizers = {m.files["tokenizer.json"].sha256 for m in manifests.values()}
    if len(tokenizers) != 1:
        raise SystemExit("export: teacher and student must share one tokenizer.json")
    first = manifests["teacher"]
    encoder = TextEncoder.from_folder(reg.path(first.name, first.version), first.max_length)
    ids, mask = encoder(texts)
    used = np.unique(np.concatenate([ids.ravel(), [0]]))  # 0 = [PAD], which keeps its id
    remap = np.zeros(int(ids.max()) + 1, np.int64)
    remap[used] = np.arange(len(used))
    tensors = {"input_ids": remap[ids].astype(np.int32), "attention_mask": mask.astype(np.int8)}
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"texts": len(texts), "vocab_kept": int(len(used)), "models": {}}
    for role, m in manifests.items():
        folder = reg.path(m.name, m.version)
        p = load_variant(m.name, m.version, registry=reg, threads=torch.get_num_threads())
        tensors[f"reference_{role}"] = np.concatenate(
            [p.predict_proba(texts[i : i + 64]).argmax(-1) for i in range(0, len(texts), 64)]
        ).astype(np.int64)
        state = load_file(str(folder / "model.safetensors"))
        state[EMBEDDINGS] = state[EMBEDDINGS][torch.from_numpy(used)]
        (out / role).mkdir(exist_ok=True)
        save_file({k: v.half().contiguous() for k, v in state.items()}, str(out / role / "model.safetensors"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config["vocab_size"] = int(len(used))
        (out / role / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        meta["models"][role] = {"ref": m.ref, "labels": m.labels, "precision": m.precision}
    save_numpy(tensors, str(out / "inputs.safetensors"))
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(texts)} test texts, {len(used)} of the vocabulary, {size / 2**20:.1f} MiB")
    if size > LIMIT_BYTES:
        print(f"export: {size / 2**20:.1f} MiB is over the 64 MiB that may travel; use fewer --texts")
        return 1
    return 0


# -- run (on the device: torch, transformers, safetensors, numpy, stdlib only) ---------------
class Classifier(nn.Module):
    """The registry's TextClassifier (variants/modeling.py), rebuilt here without the project."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        config = AutoConfig.from_pretrained(folder)
        try:
            self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:  # encoders without a pooler take no such argument
            self.encoder = AutoModel.from_config(config)
        self.pooling = getattr(config, "slimgate_pooling", "mean")
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        self.eval()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return self.classifier(h[:, 0])
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.classifier((h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    return f"CPU {model}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def batch(inputs: dict[str, np.ndarray], start: int, size: int, device: str) -> tuple[torch.Tensor, ...]:
    """Rows start..start+size, padded to their own longest text (as the serving tokenizer pads)."""
    ids = inputs["input_ids"][start : start + size]
    mask = inputs["attention_mask"][start : start + size]
    longest = max(1, int(mask.sum(axis=1).max()))
    as_tensor = [torch.from_numpy(a[:, :longest].astype(np.int64)).to(device) for a in (ids, mask)]
    return as_tensor[0], as_tensor[1]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model: nn.Module, inputs: dict[str, np.ndarray], size: int, device: str, repeats: int) -> float:
    """p50 seconds of one batch of ``size`` texts (the first ones, repeated to fill a big batch)."""
    n = len(inputs["input_ids"])
    if size > n:
        inputs = {k: np.concatenate([v] * (size // n + 1))[:size] for k, v in inputs.items()}
    ids, mask = batch(inputs, 0, size, device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):  # two untimed: allocation and kernel selection
            sync(device)
            t0 = time.perf_counter()
            model(ids, mask)
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predictions(model: nn.Module, inputs: dict[str, np.ndarray], device: str, size: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs["input_ids"]), size):
            out.append(model(*batch(inputs, start, size, device)).float().argmax(-1).cpu().numpy())
    return np.concatenate(out)


def run(data: Path, device: str, small: bool, texts: int | None, json_out: Path | None) -> int:
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no CUDA device (torch.cuda.is_available() is false)")
        return 2
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    inputs = load_numpy(str(data / "inputs.safetensors"))
    n = min(texts or (64 if small else 2000), meta["texts"])
    inputs = {k: v[:n] for k, v in inputs.items()}
    sizes = (1, 32) if small else (1, 32, 256)
    repeats = 3 if small else 30
    print(f"device: {device_name(device)}")
    print(f"texts: {n} of the test split (agreement against the registry's CPU fp32 predictions)")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for role in MODELS:
        for precision, dtype in PRECISIONS.items():
            if device == "cpu" and precision == "fp16":
                skipped[precision] = "fp16 runs on CUDA only (CPU fp16 kernels are slow and partial)"
                continue
            # Each precision cast from the stored weights, never from another precision's cast.
            model = Classifier(data / role).to(device=device, dtype=dtype)
            got = predictions(model, inputs, device, max(sizes))
            agreement = float((got == inputs[f"reference_{role}"]).mean())
            for size in sizes:
                p50 = measure(model, inputs, size, device, repeats)
                row = {"model": role, "precision": precision, "batch": size, "p50_ms": p50 * 1e3}
                rows.append({**row, "texts_per_s": size / p50, "agreement": agreement})
    print(f"\n{'model':8} {'precision':9} {'batch':>5} {'p50 ms':>9} {'texts/s':>10} {'agreement':>9}")
    for r in rows:
        note = ""
        if r["precision"] == "fp16":
            note = "  ok" if r["agreement"] >= FP16_TARGET else f"  BELOW TARGET {FP16_TARGET}"
        print(
            f"{r['model']:8} {r['precision']:9} {r['batch']:>5} {r['p50_ms']:>9.2f} "
            f"{r['texts_per_s']:>10.0f} {r['agreement']:>9.4f}{note}"
        )
    for precision, why in skipped.items():
        print(f"{precision}: skipped: {why}")
    ratios = {}
    speed = {(r["model"], r["precision"], r["batch"]): r["texts_per_s"] for r in rows}
    print()
    for size in sizes:
        for fast in ("fp16", "bf16", "fp32"):
            if ("student", fast, size) in speed and ("teacher", "fp32", size) in speed:
                ratio = speed[("student", fast, size)] / speed[("teacher", "fp32", size)]
                ratios[f"student-{fast}/teacher-fp32@{size}"] = ratio
                print(f"student-{fast} / teacher-fp32 at batch {size}: {ratio:.2f}x")
            elif fast == "fp16":
                print(
                    f"student-fp16 / teacher-fp32 at batch {size}: skipped: {skipped.get('fp16', 'not run')}"
                )
    if json_out:
        report = {
            "device": device_name(device),
            "texts": n,
            "rows": rows,
            "skipped": skipped,
            "ratios": ratios,
        }
        json_out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write what travels to the GPU machine (needs the project)")
    ex.add_argument("--registry", default=None, help="registry root (default: $SLIMGATE_REGISTRY)")
    ex.add_argument("--out", type=Path, default=Path(".gpu_check"))
    ex.add_argument("--texts", type=int, default=2000, help="test texts to export (default 2000)")
    ex.add_argument("--teacher", default="teacher")
    ex.add_argument("--student", default="student")
    rn = sub.add_parser("run", help="measure on this machine's device")
    rn.add_argument("--data", type=Path, default=Path(".gpu_check"))
    rn.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if present")
    rn.add_argument("--small", action="store_true", help="few texts, batches 1 and 32: the CPU smoke run")
    rn.add_argument("--texts", type=int, default=None, help="texts to use (default 2000; --small 64)")
    rn.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    rn.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.command == "export":
        return export(args.registry, args.out, args.texts, {"teacher": args.teacher, "student": args.student})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return run(args.data, device, args.small, args.texts, args.json)


if __name__ == "__main__":
    sys.exit(main())
