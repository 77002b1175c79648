"""The recipe's ``data`` section: the data set a build reads and how it is split (a part of
:mod:`variants.recipe`, which re-exports it; kept apart only for size)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class RecipeSection(BaseModel):
    """A recipe section: unknown keys refused, values frozen.

    Fields named in ``absent_when_none`` are left out of the section's dump while they are None:
    each build step's inputs key hashes the sections it reads, and a field added later must not
    change the key of a recipe that does not use it (registries keep their builds).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    absent_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        # A section set to None where the schema wants one (model_copy does not validate) is None.
        if not isinstance(out, dict):
            return out
        for name in self.absent_when_none:
            if out.get(name, ...) is None:
                del out[name]
        return out


class DataSource(RecipeSection):
    """The user's labelled texts: one file or folder with every row, or one file per split."""

    path: str | None = Field(
        None,
        description="A CSV, TSV, JSON Lines or Parquet file, or a folder written by datasets' "
        "save_to_disk (a Dataset, or a DatasetDict whose splits are kept); relative to the recipe file.",
    )
    train: str | None = Field(None, description="The training rows, when each split has its own file.")
    validation: str | None = Field(None, description="The validation rows (with train and test).")
    test: str | None = Field(None, description="The test rows (with train and validation).")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "datasets"] = Field(
        "auto", description="auto = from the file's suffix (.csv .tsv .jsonl .parquet) or a folder."
    )
    text_column: str = Field("text", description="The column holding each text.")
    label_column: str = Field("label", description="The column holding each label.")
    group_column: str | None = Field(
        None,
        description="Rows sharing this column's value stay in one split (say, one document's sentences); "
        "null = rows are grouped by their text, so copies of a text never straddle splits.",
    )
    split_column: str | None = Field(
        None, description="A column saying each row's split (train, validation, test; val, dev accepted)."
    )
    labels: list[str] | None = Field(
        None, description="The label table in class order; null = the data's labels, sorted."
    )

    @model_validator(mode="after")
    def _one_layout(self) -> DataSource:
        per_split = [self.train, self.validation, self.test]
        if self.path is not None and any(f is not None for f in per_split):
            raise ValueError("give either path or train/validation/test files, not both")
        if self.path is None and not all(f is not None for f in per_split):
            raise ValueError("give path, or all three of train, validation and test")
        if self.split_column is not None and self.path is None:
            raise ValueError("split_column is for one file holding every split (path)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels lists a label twice")
        return self


class DataConfig(RecipeSection):
    """Where the texts come from and how they are split and tokenized."""

    absent_when_none = ("source",)
    source: DataSource | None = Field(
        None, description="The user's data; null = the bundled WordNet noun snapshot (the reference task)."
    )
    validation_fraction: Fraction = Field(
        0.1, description="Share of groups (WordNet: headwords) held out for validation, when slimgate splits."
    )
    test_fraction: Fraction = Field(
        0.1, description="Share of groups (WordNet: headwords) held out for test, when slimgate splits."
    )
    seed: int = Field(0, description="Seed of the group-to-split assignment.")
    max_length: Annotated[int, Field(ge=8, le=512)] = Field(
        64, description="Token limit per text; longer glosses are truncated (same for every variant)."
    )
