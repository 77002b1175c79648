"""The user's own fine-tuned teacher: a Hugging Face sequence classifier checkpoint, used as it is.

A checkpoint is a local folder with ``config.json`` (its architecture and ``id2label``), weights in
safetensors (one file, or shards with their index) and a tokenizer. It keeps its own head and
pooling: it is loaded with ``AutoModelForSequenceClassification`` and never retrained. Its label
table is the class order of every variant built from it; the data's labels must be the same set,
directly or through the recipe's ``teacher.label_map``.

Refused, with what to do: a folder without a sequence classifier's config, weights only in a
pickle (``pytorch_model.bin``; slimgate never unpickles), and labels that do not match the data's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from variants.recipe import Recipe
from variants.registry import sha256_file

CONVERT_HINT = (
    'convert it once, where you trust the file: python -c "from transformers import '
    "AutoModelForSequenceClassification as M; M.from_pretrained('{dir}').save_pretrained('{dir}')\" "
    "(save_pretrained writes model.safetensors)"
)


class CheckpointError(ValueError):
    """A teacher checkpoint that cannot be used; the message says why and what to do."""


def checkpoint_dir(recipe: Recipe) -> Path | None:
    """The recipe's fine-tuned teacher folder (relative paths from the recipe file), or None."""
    if recipe.teacher.checkpoint is None:
        return None
    return recipe.base_dir / recipe.teacher.checkpoint


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files (one, or the shards its index names), checked."""
    if not folder.is_dir():
        raise CheckpointError(f"teacher.checkpoint {folder}: no such folder")
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / s for s in shards]
    if any((folder / name).is_file() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise CheckpointError(
            f"teacher.checkpoint {folder}: its weights are a pickle (pytorch_model.bin), and slimgate "
            f"never unpickles; {CONVERT_HINT.format(dir=folder)}"
        )
    raise CheckpointError(f"teacher.checkpoint {folder}: no model.safetensors (nor a sharded index)")


def read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckpointError(f"teacher.checkpoint {folder}: no such folder")
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"teacher.checkpoint {folder}: no config.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"teacher.checkpoint {path}: does not parse as JSON: {exc}") from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise CheckpointError(
            f"teacher.checkpoint {folder}: config.json describes {architectures or 'no architecture'}, "
            "not a fine-tuned sequence classifier (…ForSequenceClassification); a base encoder to "
            "fine-tune goes in teacher.model instead"
        )
    return config


def checkpoint_labels(folder: Path) -> list[str]:
    """The checkpoint's class names in class order (its id2label, as transformers reads it: a
    config that omits the default LABEL_0, LABEL_1 names still has them)."""
    from transformers import AutoConfig

    read_config(folder)
    config = AutoConfig.from_pretrained(str(folder))
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def label_table(recipe: Recipe, data_labels: tuple[str, ...]) -> tuple[str, ...]:
    """The build's label table: the checkpoint's classes, in its order, named as the data names
    them; refused with both sets when they are not the data's labels."""
    folder = checkpoint_dir(recipe)
    assert folder is not None
    own = checkpoint_labels(folder)
    mapping = recipe.teacher.label_map or {}
    unknown = sorted(set(mapping) - set(own))
    if unknown:
        raise CheckpointError(
            f"teacher.label_map maps {unknown}, which the checkpoint's id2label {own} lacks"
        )
    table = tuple(mapping.get(label, label) for label in own)
    if len(set(table)) != len(table) or set(table) != set(data_labels):
        raise CheckpointError(
            f"teacher.checkpoint {folder}: its labels {list(table)}"
            + (f" (after teacher.label_map, from {own})" if mapping else "")
            + f" are not the data's labels {sorted(data_labels)}; map them with teacher.label_map"
        )
    return table


def fingerprint(folder: Path) -> str:
    """sha256 of the checkpoint's weights (of each shard, hashed together) and its config."""
    from variants.registry import sha256_json

    return sha256_json(
        {
            "weights": [sha256_file(f) for f in weight_files(folder)],
            "config": sha256_file(folder / "config.json"),
        }
    )


def load_checkpoint(folder: Path, labels: tuple[str, ...]) -> Any:
    """The checkpoint as a torch module (fp32, eval), its id2label named as the build's labels."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    weight_files(folder)  # refuses pickles before transformers sees the folder
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    return model.eval()
