"""The variant registry: one folder per variant version, each with a manifest of its lineage.

Layout: ``ROOT/<name>/v<version>/manifest.json`` beside the artifact files it lists. The
manifest records every file's SHA-256; :meth:`Registry.verify` recomputes them and refuses any
mismatch, so a variant is only ever loaded from bytes the build produced. Versions are never
overwritten: a changed build input makes a new version, and the inputs key of each version
lets the pipeline skip steps whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "manifest.json"
ALLOWED_SUFFIXES = {".safetensors", ".onnx", ".json", ".txt"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says which variant and why."""


class VariantNotFound(RegistryError):
    pass


class ChecksumMismatch(RegistryError):
    pass


class GateRejected(RegistryError):
    pass


def default_registry_root() -> Path:
    """``$SLIMGATE_REGISTRY`` if set, else ``$XDG_DATA_HOME/slimgate/registry``."""
    env = os.environ.get("SLIMGATE_REGISTRY")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "slimgate" / "registry"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    bytes: int


class Gate(BaseModel):
    """The accuracy gate's decision and the evidence that decided it (see :mod:`variants.gate`)."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["pending", "passed", "rejected"] = "pending"
    min_retention: float | None = None
    retention: float | None = Field(None, description="the point estimate on the deciding texts")
    reason: str | None = Field(None, description="what decided, in words, with the figures")
    confidence: float | None = Field(None, description="the gate's confidence over all its looks")
    retention_interval: list[float | None] | None = Field(
        None, description="[low, high] of retention at that confidence; null ends are unbounded"
    )
    test_texts: int | None = Field(None, description="paired test texts the decision rests on")
    evidence: str | None = Field(None, description="which look decided: the test subset or the full split")
    resolution: float | None = Field(
        None,
        description="retention this far above the bar is rejected with probability at most 1 - confidence",
    )


class Manifest(BaseModel):
    """Everything known about one variant version. Field order is the order shown to people."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: int
    task: str
    labels: list[str]
    backend: Literal["torch", "onnxruntime", "tensorrt", "cascade"]
    format: Literal["safetensors", "onnx", "cascade"]
    precision: str = Field(description="fp32, fp16, bf16, int8-dynamic, int8-static, int8-qat")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where the variant runs (and was measured): cpu, or cuda (needs a GPU)"
    )
    max_length: int = Field(description="token limit the variant was built and evaluated with")
    files: dict[str, FileEntry]
    parents: list[str] = Field(default_factory=list, description="name@version of each parent")
    teacher: dict[str, Any] = Field(default_factory=dict, description="base model id and checksum")
    data: dict[str, str] = Field(default_factory=dict, description="split name -> content hash")
    data_source: dict[str, Any] = Field(
        default_factory=dict,
        description="where the data came from, how it was split, and the exact duplicate texts dropped "
        "from validation and test because an earlier split holds them (leakage)",
    )
    calibration: dict[str, Any] | None = None
    recipe: dict[str, Any] = Field(default_factory=dict, description="the recipe sections this step read")
    inputs_key: str = Field(description="hash of data, parent checksums and recipe; equal key = same build")
    code_version: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    build: dict[str, Any] = Field(default_factory=dict, description="build-time facts (steps, losses, time)")
    metrics: dict[str, Any] | None = None
    gate: Gate = Field(default_factory=Gate)
    deployable: bool = False
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size_bytes(self) -> int:
        return sum(f.bytes for f in self.files.values())


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'student-int8@3' -> ('student-int8', 3); 'student-int8' -> ('student-int8', None)."""
    name, sep, ver = ref.partition("@")
    if not sep:
        return name, None
    try:
        v = int(ver.lstrip("v"))
    except ValueError:
        raise RegistryError(
            f"bad variant reference {ref!r}: version must be an integer, e.g. {name}@1"
        ) from None
    return name, v


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_root()

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        d = self.root / name
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            if p.name.startswith("v") and p.name[1:].isdigit() and (p / MANIFEST).is_file():
                out.append(int(p.name[1:]))
        return sorted(out)

    def path(self, name: str, version: int) -> Path:
        return self.root / name / f"v{version}"

    def get(self, name: str, version: int | None = None) -> Manifest:
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise VariantNotFound(f"variant {name!r} is not in the registry at {self.root} (known: {known})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise VariantNotFound(f"variant {name}@{version} not found; versions of {name}: {versions}")
        text = (self.path(name, version) / MANIFEST).read_text(encoding="utf-8")
        return Manifest.model_validate_json(text)

    def resolve(self, ref: str) -> Manifest:
        name, version = parse_ref(ref)
        return self.get(name, version)

    def lookup(self, ref: str) -> Manifest | None:
        """``resolve``, or None where the ref names nothing readable here (the gateway's lineage
        reads treat that as "no lineage", never as an error)."""
        try:
            return self.resolve(ref)
        except Exception:  # noqa: BLE001 - unknown name or version, a bad ref or an unreadable manifest
            return None

    def latest(self) -> list[Manifest]:
        return [self.get(n) for n in self.names()]

    def find_by_inputs(self, name: str, inputs_key: str) -> Manifest | None:
        """The newest version of ``name`` built from exactly these inputs, if its files still verify."""
        for v in reversed(self.versions(name)):
            m = self.get(name, v)
            if m.inputs_key == inputs_key:
                try:
                    self.verify(name, v)
                except ChecksumMismatch:
                    return None
                return m
        return None

    def verify(self, name: str, version: int | None = None) -> Manifest:
        """Recompute every checksum; raise :class:`ChecksumMismatch` naming the first bad file."""
        m = self.get(name, version)
        folder = self.path(m.name, m.version)
        for rel, entry in m.files.items():
            p = folder / rel
            if not p.is_file():
                raise ChecksumMismatch(f"{m.ref}: file {rel} listed in the manifest is missing")
            actual = sha256_file(p)
            if actual != entry.sha256:
                raise ChecksumMismatch(
                    f"{m.ref}: checksum mismatch for {rel} (manifest {entry.sha256[:12]}…, "
                    f"file {actual[:12]}…); refusing to load a tampered or corrupted artifact"
                )
        extra = {
            str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
        } - set(m.files)
        if extra:
            raise ChecksumMismatch(f"{m.ref}: files not listed in the manifest: {sorted(extra)}")
        return m

    # -- writing -------------------------------------------------------------------------
    def register(self, staging: Path, **fields: Any) -> Manifest:
        """Move the files in ``staging`` into a new version folder and write its manifest.

        Only safetensors, ONNX, JSON and text files are accepted, so nothing that needs
        unpickling can ever enter the registry.
        """
        name = fields["name"]
        if not _NAME_RE.match(name):
            raise RegistryError(f"bad variant name {name!r}: use lower-case letters, digits and '-'")
        files: dict[str, FileEntry] = {}
        for p in sorted(staging.rglob("*")):
            if not p.is_file():
                continue
            rel = str(p.relative_to(staging))
            if p.suffix not in ALLOWED_SUFFIXES:
                raise RegistryError(
                    f"{name}: refusing to register {rel}: only {sorted(ALLOWED_SUFFIXES)} allowed"
                )
            files[rel] = FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
        (self.root / name).mkdir(parents=True, exist_ok=True)
        version = (self.versions(name) or [0])[-1] + 1
        manifest = Manifest(version=version, files=files, created_at=now_iso(), **fields)
        # Build the version in a temporary folder and rename it into place, so that readers
        # never see a half-written version.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root / name))
        for rel in files:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / rel), dst)
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        os.rename(tmp, self.path(name, version))
        return manifest

    def save(self, manifest: Manifest) -> None:
        """Rewrite a manifest's mutable parts (metrics, gate, deployable) atomically."""
        current = self.get(manifest.name, manifest.version)
        if current.files != manifest.files or current.inputs_key != manifest.inputs_key:
            raise RegistryError(f"{manifest.ref}: files and inputs of a registered version are immutable")
        target = self.path(manifest.name, manifest.version) / MANIFEST
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, target)

    def set_deployable(self, name: str, version: int | None = None, deployable: bool = True) -> Manifest:
        m = self.get(name, version)
        if deployable and m.gate.status != "passed":
            raise GateRejected(
                f"{m.ref} cannot be marked deployable: its accuracy gate is {m.gate.status}"
                + (f" ({m.gate.reason})" if m.gate.reason else "")
            )
        m.deployable = deployable
        self.save(m)
        return m
