"""The classifier architecture every torch variant shares: a transformers encoder, pooling, a linear head.

The default teacher (all-MiniLM-L6-v2) was trained to produce mean-pooled sentence
embeddings; its [CLS] pooler was never trained for that. Classifying from the mean of the
token states therefore starts from a representation that already separates meanings and
converges in a fraction of the steps a [CLS] head needs. The encoder is any
``transformers`` ``AutoModel``; the pooling mode travels in ``config.json``
(``slimgate_pooling``) so that a variant folder fully describes its own architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

POOLING_KEY = "slimgate_pooling"


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


def _encoder_from(config: PretrainedConfig) -> nn.Module:
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler (e.g. DistilBERT) take no such argument
        return AutoModel.from_config(config)


def classifier_from_config(config: PretrainedConfig) -> nn.Module:
    """A fresh model of ``config``'s shape: slimgate's pooled classifier when the config says its
    pooling, else the architecture's own sequence classifier (its head and pooling, as fine-tuned)."""
    if hasattr(config, POOLING_KEY):
        return TextClassifier(config)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_config(config)


class TextClassifier(nn.Module):
    def __init__(self, config: PretrainedConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.pooling = getattr(config, POOLING_KEY, "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"{POOLING_KEY} must be 'mean' or 'cls', got {self.pooling!r}")
        self.encoder = encoder if encoder is not None else _encoder_from(config)
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    @classmethod
    def from_pretrained_encoder(cls, source: str, labels: list[str], seed: int = 0) -> TextClassifier:
        """A pretrained encoder (local dir or hub id, safetensors only) with a fresh head, drawn
        from ``seed``: torch's default generator starts from a random seed in every process, so an
        unseeded head would make two builds of one recipe two different teachers."""
        encoder = AutoModel.from_pretrained(source, use_safetensors=True)
        config = encoder.config
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        setattr(config, POOLING_KEY, "mean")
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            encoder.pooler = None  # unused by mean pooling; keeps the saved weights minimal
        model = cls(config, encoder)
        head = torch.Generator().manual_seed(seed)
        std = getattr(config, "initializer_range", 0.02)
        nn.init.normal_(model.classifier.weight, std=std, generator=head)
        nn.init.zeros_(model.classifier.bias)
        return model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> ClassifierOutput:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        h = out.last_hidden_state
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        return ClassifierOutput(logits, out.hidden_states if output_hidden_states else None)
