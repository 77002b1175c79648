import pytest

from variants.registry import (
    ChecksumMismatch,
    GateRejected,
    Registry,
    RegistryError,
    VariantNotFound,
    parse_ref,
)


def _fields(name="m", **kw):
    base = dict(
        name=name,
        task="t",
        labels=["a", "b"],
        backend="onnxruntime",
        format="onnx",
        precision="fp32",
        max_length=16,
        inputs_key="k1",
        code_version="test",
    )
    base.update(kw)
    return base


def _stage(tmp_path, files):
    d = tmp_path / "stage"
    d.mkdir(exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_register_verify_and_versions(tmp_path):
    reg = Registry(tmp_path / "reg")
    m1 = reg.register(_stage(tmp_path, {"model.onnx": b"one", "tokenizer.json": b"{}"}), **_fields())
    m2 = reg.register(_stage(tmp_path, {"model.onnx": b"two"}), **_fields(inputs_key="k2"))
    assert (m1.version, m2.version) == (1, 2)
    assert reg.versions("m") == [1, 2]
    assert reg.get("m").version == 2
    assert reg.verify("m", 1).files["model.onnx"].bytes == 3
    assert reg.find_by_inputs("m", "k1").version == 1
    assert reg.find_by_inputs("m", "nope") is None


def test_tampered_file_is_refused(tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.register(_stage(tmp_path, {"model.onnx": b"weights"}), **_fields())
    (reg.path("m", 1) / "model.onnx").write_bytes(b"evil")
    with pytest.raises(ChecksumMismatch, match=r"m@1: checksum mismatch for model.onnx"):
        reg.verify("m", 1)
    # A tampered version is never reused by a rebuild either.
    assert reg.find_by_inputs("m", "k1") is None


def test_missing_and_extra_files_are_refused(tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.register(_stage(tmp_path, {"model.onnx": b"w", "tokenizer.json": b"{}"}), **_fields())
    (reg.path("m", 1) / "sneaky.onnx").write_bytes(b"x")
    with pytest.raises(ChecksumMismatch, match="not listed"):
        reg.verify("m", 1)
    (reg.path("m", 1) / "sneaky.onnx").unlink()
    (reg.path("m", 1) / "tokenizer.json").unlink()
    with pytest.raises(ChecksumMismatch, match="tokenizer.json listed in the manifest is missing"):
        reg.verify("m", 1)


@pytest.mark.parametrize("name", ["model.pkl", "model.pt", "weights.bin"])
def test_pickle_formats_never_enter(tmp_path, name):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="refusing to register"):
        reg.register(_stage(tmp_path, {name: b"\x80\x04"}), **_fields())
    assert reg.names() == []


def test_rejected_variant_cannot_be_deployable(tmp_path):
    reg = Registry(tmp_path / "reg")
    m = reg.register(_stage(tmp_path, {"model.onnx": b"w"}), **_fields())
    m.gate.status = "rejected"
    m.gate.reason = "retention 0.5 < 0.97"
    reg.save(m)
    with pytest.raises(GateRejected, match=r"m@1 cannot be marked deployable.*retention 0.5"):
        reg.set_deployable("m", 1)
    m.gate.status = "passed"
    reg.save(m)
    assert reg.set_deployable("m", 1).deployable is True


def test_files_of_a_version_are_immutable(tmp_path):
    reg = Registry(tmp_path / "reg")
    m = reg.register(_stage(tmp_path, {"model.onnx": b"w"}), **_fields())
    m.inputs_key = "other"
    with pytest.raises(RegistryError, match="immutable"):
        reg.save(m)


def test_not_found_and_refs(tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(VariantNotFound, match="not in the registry"):
        reg.get("ghost")
    assert parse_ref("student-int8@3") == ("student-int8", 3)
    assert parse_ref("student-int8") == ("student-int8", None)
    with pytest.raises(RegistryError, match="version must be an integer"):
        parse_ref("student@latest")
    with pytest.raises(RegistryError, match="bad variant name"):
        reg.register(_stage(tmp_path, {"model.onnx": b"w"}), **_fields(name="../escape"))


def test_lookup_is_resolve_or_none(tmp_path):
    reg = Registry(tmp_path / "reg")
    m = reg.register(_stage(tmp_path, {"model.onnx": b"w"}), **_fields())
    assert reg.lookup("m").ref == m.ref == reg.lookup(f"m@{m.version}").ref
    # unknown name, unknown version and an unparsable ref all read as "no lineage"
    assert reg.lookup("ghost") is None
    assert reg.lookup(f"m@{m.version + 1}") is None
    assert reg.lookup("m@latest") is None
    # an unreadable manifest too: the gateway's lineage reads must not fail on one
    (reg.path("m", m.version) / "manifest.json").write_text("{", encoding="utf-8")
    assert reg.lookup("m") is None
