"""Reading the user's data files into checked rows: CSV, TSV, JSON Lines, Parquet, and folders
written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose split names are
kept). Arrow files are read with ``pyarrow`` directly, so no ``datasets`` package is needed.

Each row is checked as it is read; every problem is a :class:`DataError` naming the file, the row or
line and the column: a missing column, an empty text or label, text that is not UTF-8, a line that
does not parse, a split name that is not one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from variants.recipe import DataSource

SPLITS = ("train", "validation", "test")
# Split names other tools write, read as ours.
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "test"}
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataError(ValueError):
    """Data that cannot be used; the message names the file, the row or line and the column."""


@dataclass(frozen=True)
class Row:
    where: str  # "path:line" or "path row n", for messages
    text: str
    label: str
    group: str | None
    split: str | None


# --- reading ---------------------------------------------------------------------------------


def _format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "datasets"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the name; set data.source.format to one of "
            "csv, tsv, jsonl, parquet, datasets"
        )
    return fmt


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def _delimited(path: Path, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (a header row naming the columns is needed)")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields where the header has {len(header)}")
            yield where, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: does not parse as {_name(delimiter)}: {exc}") from None


def _name(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for n, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{n}: each line must be a JSON object, got {type(record).__name__}")
        yield f"{path}:{n}", record


def _arrow_rows(path: Path, table: Any, class_names: dict[str, list[str]]) -> Iterator[tuple[str, dict]]:
    for n, record in enumerate(table.to_pylist(), start=1):
        # A datasets ClassLabel column stores ints; its names are the labels people read.
        for column, names in class_names.items():
            value = record.get(column)
            if isinstance(value, int) and 0 <= value < len(names):
                record[column] = names[value]
        yield f"{path} row {n}", record


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: does not parse as Parquet: {exc}") from None
    yield from _arrow_rows(path, table, {})


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (a datasets folder written by save_to_disk has it)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: does not parse as JSON: {exc}") from None


def _saved_dataset(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """One ``Dataset.save_to_disk`` folder: its Arrow stream files, in order."""
    import pyarrow as pa

    state = _json_file(folder / "state.json")
    info = _json_file(folder / "dataset_info.json")
    features = info.get("features") or {}
    class_names = {
        column: list(spec["names"])
        for column, spec in features.items()
        if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and "names" in spec
    }
    for entry in state.get("_data_files", []):
        file = folder / entry["filename"]
        try:
            with pa.memory_map(str(file)) as source:
                table = pa.ipc.open_stream(source).read_all()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{file}: does not parse as an Arrow stream: {exc}") from None
        yield from _arrow_rows(file, table, class_names)


def _datasets_folder(folder: Path) -> dict[str | None, Iterator[tuple[str, dict]]]:
    """The rows of a saved ``Dataset`` (split None) or of each split of a ``DatasetDict``."""
    index = folder / "dataset_dict.json"
    if index.is_file():
        splits = _json_file(index).get("splits", [])
        return {_split_name(name, str(index)): _saved_dataset(folder / name) for name in splits}
    return {None: _saved_dataset(folder)}


def _records(path: Path, declared: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = _format(path, declared)
    if path.is_dir():
        raise DataError(f"{path}: a folder, but data.source.format is {fmt}")
    if fmt == "csv":
        return _delimited(path, ",")
    if fmt == "tsv":
        return _delimited(path, "\t")
    if fmt == "jsonl":
        return _jsonl(path)
    return _parquet(path)


def _split_name(value: str, where: str) -> str:
    name = _SPLIT_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in SPLITS:
        raise DataError(f"{where}: split {value!r} is none of {list(SPLITS)} (or val, valid, dev, eval)")
    return name


def _cell(record: dict[str, Any], column: str, field: str, where: str, columns_seen: list[str]) -> Any:
    if column not in record:
        raise DataError(
            f"{where}: no column {column!r} (data.source.{field}); the columns are {columns_seen}"
        )
    return record[column]


def read_rows(source: DataSource, base: Path) -> Iterator[Row]:
    """Every row of the source, checked, with the split it declares (None: slimgate splits).

    Relative paths are from ``base``."""
    files: list[tuple[str | None, Path]]
    if source.path is not None:
        files = [(None, base / source.path)]
    else:
        files = [(name, base / str(getattr(source, name))) for name in SPLITS]
    for fixed_split, path in files:
        if path.is_dir() or (source.format == "datasets"):
            if not path.exists():
                raise DataError(f"{path}: no such file or folder")
            groups = _datasets_folder(path)
            streams: list[tuple[str | None, Iterable[tuple[str, dict]]]] = [
                (fixed_split or split, records) for split, records in groups.items()
            ]
        else:
            streams = [(fixed_split, _records(path, source.format))]
        for split, records in streams:
            yield from _checked(records, source, split)


def _checked(records: Iterable[tuple[str, dict]], source: DataSource, split: str | None) -> Iterator[Row]:
    for where, record in records:
        columns = list(record)
        text = _cell(record, source.text_column, "text_column", where, columns)
        if not isinstance(text, str):
            raise DataError(f"{where}: column {source.text_column!r} holds {type(text).__name__}, not text")
        if not text.strip():
            raise DataError(f"{where}: column {source.text_column!r} is empty")
        label = _cell(record, source.label_column, "label_column", where, columns)
        if label is None or isinstance(label, float | list | dict) or str(label).strip() == "":
            raise DataError(f"{where}: column {source.label_column!r} holds no label ({label!r})")
        group = None
        if source.group_column is not None:
            value = _cell(record, source.group_column, "group_column", where, columns)
            if value is None or str(value).strip() == "":
                raise DataError(f"{where}: column {source.group_column!r} (the group key) is empty")
            group = str(value)
        row_split = split
        if source.split_column is not None:
            value = _cell(record, source.split_column, "split_column", where, columns)
            row_split = _split_name(str(value), f"{where}: column {source.split_column!r}")
        yield Row(where, text.strip(), str(label).strip(), group, row_split)
