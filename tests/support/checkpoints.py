"""Tiny fine-tuned sequence classifiers of each architecture slimgate takes as a teacher: random
weights from a small config, saved with ``save_pretrained`` next to a small WordPiece tokenizer, as
a user's own checkpoint folder would be (config.json with id2label, model.safetensors,
tokenizer.json). Built offline in a second."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ARCHITECTURES = ("bert", "minilm", "roberta", "xlm-roberta", "distilbert", "deberta-v2")


def tiny_tokenizer(texts: list[str], out: Path) -> int:
    """A WordPiece tokenizer over the texts' words; returns its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for t in texts for w in t.lower().replace(",", " ").replace(";", " ").split()})
    vocab = {token: i for i, token in enumerate(SPECIALS + words[:2000])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return len(vocab)


def tiny_config(arch: str, vocab_size: int, labels: list[str]):
    import transformers as tf

    common = {
        "vocab_size": vocab_size,
        "max_position_embeddings": 130,
        "pad_token_id": 0,
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    bert_like = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}
    if arch in ("bert", "minilm"):
        # MiniLM checkpoints are BERT models, narrower and shallower.
        return tf.BertConfig(
            **common, **({**bert_like, "hidden_size": 24} if arch == "minilm" else bert_like)
        )
    if arch == "roberta":
        return tf.RobertaConfig(**common, **bert_like)
    if arch == "xlm-roberta":
        return tf.XLMRobertaConfig(**common, **bert_like)
    if arch == "distilbert":
        return tf.DistilBertConfig(**common, dim=32, n_layers=4, n_heads=2, hidden_dim=64)
    if arch == "deberta-v2":
        return tf.DebertaV2Config(
            **common, **bert_like, relative_attention=True, position_buckets=16, type_vocab_size=0
        )
    raise ValueError(arch)


def tiny_checkpoint(arch: str, out: Path, texts: list[str], labels: list[str], seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification

    vocab_size = tiny_tokenizer(texts, out)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(arch, vocab_size, labels))
    model.save_pretrained(str(out))
    return out
