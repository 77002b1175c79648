"""``slimgate variants init``: a recipe for the user's own data and model, written for them to edit.

It starts from a bundled recipe (``default``, or ``quick`` for a small first build), points its data
section at the user's file and columns and its teacher at their checkpoint (or base encoder), and
keeps the student a third as deep as that teacher. Before writing anything it reads the data and
the checkpoint exactly as a build will, so a bad column, file or label table is refused now rather
than after minutes of building. Every field is written with its description from the recipe schema
(:mod:`variants.recipe`) as a comment: the file documents itself and cannot drift from the schema.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from variants.recipe import Recipe, RecipeError, RecipeSection, load_recipe, parse_recipe

WIDTH = 96


def student_layers(depth: int) -> list[int]:
    """A third of the teacher's blocks (at least 2), evenly spread from the first to the last."""
    if depth < 2:
        return [0]
    keep = max(2, -(-depth // 3))
    return sorted({round(i * (depth - 1) / (keep - 1)) for i in range(keep)})


def _teacher_depth(folder: Path) -> int:
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(str(folder)).num_hidden_layers)


def _task_name(data: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", data.stem.lower()).strip("-") or "my-task"


def make_recipe(
    data: Path,
    *,
    text_column: str,
    label_column: str,
    group_column: str | None = None,
    split_column: str | None = None,
    teacher: Path | None = None,
    base: str | None = None,
    label_map: dict[str, str] | None = None,
    profile: str = "default",
    out_dir: Path,
) -> Recipe:
    """The recipe ``init`` writes, checked against the data and the teacher as a build would."""
    from variants.data_sources import load_data

    if teacher is not None and base is not None:
        raise RecipeError(
            "give --teacher (a fine-tuned checkpoint) or --base (an encoder to fine-tune), not both"
        )
    start = load_recipe(profile).model_dump(mode="json")
    start["task"] = _task_name(data)
    start["data"]["source"] = {
        "path": _relative(data, out_dir),
        "text_column": text_column,
        "label_column": label_column,
        "group_column": group_column,
        "split_column": split_column,
    }
    if teacher is not None:
        start["teacher"]["checkpoint"] = _relative(teacher, out_dir)
        start["teacher"]["label_map"] = label_map
        depth = _teacher_depth(teacher)
    else:
        if label_map:
            raise RecipeError("--label-map maps a checkpoint's labels; give --teacher")
        if base is not None:
            start["teacher"]["model"] = base
        from variants.training import resolve_base_model

        depth = _teacher_depth(Path(resolve_base_model(start["teacher"]["model"])))
    start["student"]["layers"] = student_layers(depth)
    recipe = parse_recipe(start, "(the recipe init writes)")
    recipe._base_dir = out_dir.resolve()
    load_data(recipe)  # every data and label-table problem, now
    return recipe


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def render(recipe: Recipe, header: str) -> str:
    """The recipe as YAML, each field under its schema description."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += _section(recipe, 0)
    return "\n".join(lines) + "\n"


def _section(model: BaseModel, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    dumped = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        if name not in dumped:  # left out while unset (RecipeSection.absent_when_none)
            continue
        if info.description:
            out += [pad + "# " + line for line in textwrap.wrap(info.description, WIDTH - indent - 2)]
        value = getattr(model, name)
        if isinstance(value, RecipeSection):
            out.append(f"{pad}{name}:")
            out += _section(value, indent + 2)
        else:
            out += _value(name, dumped[name], pad)
    return out


def _value(name: str, value: Any, pad: str) -> list[str]:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        body = yaml.safe_dump(value, sort_keys=False, default_flow_style=None, width=WIDTH).splitlines()
        return [f"{pad}{name}:"] + [f"{pad}  {line}" for line in body]
    text = yaml.safe_dump({name: value}, sort_keys=False, default_flow_style=True, width=10_000).strip()
    return [pad + text.removeprefix("{").removesuffix("}")]
