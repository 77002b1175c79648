"""A gateway config against the variant registry: every ref resolved, checked and pinned to a version.

The only part of :mod:`serving.config` that does I/O (it reads registry manifests).
"""

from __future__ import annotations

from serving.config.base import ConfigError
from serving.config.schema import GatewayConfig
from variants.registry import Manifest, Registry, RegistryError

# The artifact format each backend opens (variants/backends): an override must match the
# format the variant was registered in.
BACKEND_FORMAT = {"torch": "safetensors", "onnxruntime": "onnx", "tensorrt": "onnx"}


def check_against_registry(cfg: GatewayConfig, registry: Registry | None = None) -> dict[str, Manifest]:
    """Check every configured ref against the registry; return the manifest each key resolves to.

    Refused, with every problem listed: a ref not in the registry, a variant that is not deployable
    (its accuracy gate did not pass), a backend override that cannot open the variant's format, a
    TensorRT variant without a GPU, and a label table that differs from the stable variant's (the
    gateway's answers and shadow comparisons assume one label table).
    """
    reg = registry if registry is not None else Registry(cfg.registry)
    problems: list[str] = []
    manifests: dict[str, Manifest] = {}
    for key, spec in sorted(cfg.variants.items()):
        where = f"variants.{key}"
        try:
            m = reg.get(spec.name, spec.version)
        except RegistryError as err:
            problems.append(f"{where}.ref: {spec.ref!r} is not in the registry: {err}")
            continue
        manifests[key] = m
        if not m.deployable or m.gate.status != "passed":
            reason = f" ({m.gate.reason})" if m.gate.reason else ""
            gate = f"gate {m.gate.status}{reason}, deployable={m.deployable}"
            problems.append(f"{where}.ref: {m.ref} is not deployable ({gate})")
        backend = spec.backend or m.backend
        if BACKEND_FORMAT[backend] != m.format:
            problems.append(f"{where}.backend: {backend} cannot open {m.ref}, which is stored as {m.format}")
        if backend == "tensorrt" and spec.in_router:
            problems.append(
                f"{where}.placement: {m.ref} runs on TensorRT and needs a GPU: use placement: deployment"
            )
        elif backend == "tensorrt" and not spec.resources.num_gpus:
            problems.append(f"{where}.resources.num_gpus: {m.ref} runs on TensorRT and needs a GPU")
    stable = manifests.get(cfg.routing.stable)
    if stable is not None:
        for key, m in sorted(manifests.items()):
            if m.labels != stable.labels:
                problems.append(
                    f"variants.{key}.ref: {m.ref} has a different label table from the stable variant "
                    f"{stable.ref}; the gateway serves one label table"
                )
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"gateway config does not match the registry at {reg.root}:\n{lines}")
    return manifests


def pin_refs(cfg: GatewayConfig, registry: Registry | None = None) -> GatewayConfig:
    """``cfg`` checked against the registry, with every ref pinned to the version it resolves to now.

    A gateway started or changed from a config that says ``student-int8`` then keeps serving the
    version it loaded, whatever is built later; only another apply moves it.
    """
    manifests = check_against_registry(cfg, registry)
    return cfg.with_changes({f"variants.{k}.ref": m.ref for k, m in manifests.items()}, "pinned config")
