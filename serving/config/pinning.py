"""A gateway config against the variant registry: every ref resolved, checked and pinned to a version.

The only part of :mod:`serving.config` that does I/O (it reads registry manifests).
"""

from __future__ import annotations

from serving.config.base import ConfigError
from serving.config.schema import GatewayConfig
from serving.config.variant import VariantSpec
from variants.registry import Manifest, Registry, RegistryError

# The artifact format each backend opens (variants/backends): an override must match the
# format the variant was registered in.
BACKEND_FORMAT = {"torch": "safetensors", "onnxruntime": "onnx", "tensorrt": "onnx", "cascade": "cascade"}


def check_against_registry(cfg: GatewayConfig, registry: Registry | None = None) -> dict[str, Manifest]:
    """Check every configured ref against the registry; return the manifest each key resolves to.

    Refused, with every problem listed: a ref not in the registry, a variant that is not deployable
    (its accuracy gate did not pass), a backend override that cannot open the variant's format, a
    TensorRT or CUDA variant without a GPU (in the router, or without ``resources.num_gpus``), a
    device or precision asked of a backend that cannot honour it, and a label table that differs
    from the stable variant's (the gateway's answers and shadow comparisons assume one label table).
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
        if (spec.cascade is not None) != (m.backend == "cascade"):
            problems.append(
                f"{where}.ref: {m.ref} is a cascade entry: serve it by naming its stages "
                "(cascade: {first, then})"
                if spec.cascade is None
                else f"{where}.ref: {m.ref} is not a cascade entry (it is a {m.backend} variant)"
            )
            continue
        backend = spec.backend or m.backend
        if BACKEND_FORMAT[backend] != m.format:
            problems.append(f"{where}.backend: {backend} cannot open {m.ref}, which is stored as {m.format}")
        if backend == "tensorrt" and spec.in_router:
            problems.append(
                f"{where}.placement: {m.ref} runs on TensorRT and needs a GPU: use placement: deployment"
            )
        elif backend == "tensorrt" and not spec.resources.num_gpus:
            problems.append(f"{where}.resources.num_gpus: {m.ref} runs on TensorRT and needs a GPU")
        problems.extend(_device_problems(where, spec, m, backend))
    problems.extend(_cascade_problems(cfg, manifests))
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


def _cascade_problems(cfg: GatewayConfig, manifests: dict[str, Manifest]) -> list[str]:
    """A cascade entry must have been calibrated on exactly the stages the config serves."""
    problems = []
    for key, spec in sorted(cfg.variants.items()):
        m = manifests.get(key)
        if spec.cascade is None or m is None or m.backend != "cascade":
            continue
        first, then = manifests.get(spec.cascade.first), manifests.get(spec.cascade.then)
        if first is None or then is None:
            continue  # the stage's own ref problem is reported already
        if first.labels != then.labels:
            problems.append(
                f"variants.{key}.cascade: stages {first.ref} and {then.ref} have different label tables"
            )
        if m.parents[:2] != [first.ref, then.ref]:
            problems.append(
                f"variants.{key}.ref: {m.ref} was calibrated on {' -> '.join(m.parents[:2])}, but the "
                f"config's stages serve {first.ref} -> {then.ref}; build the cascade for these stages "
                f"(slimgate variants build) or pin the stages to the versions it was calibrated on"
            )
    return problems


def _device_problems(where: str, spec: VariantSpec, m: Manifest, backend: str) -> list[str]:
    """The device and precision rules on what the variant will really run (config, else manifest)."""
    problems = []
    if (spec.device or spec.precision) and backend != "torch":
        field = "device" if spec.device else "precision"
        problems.append(
            f"{where}.{field}: only a torch variant is placed and cast when loaded; {m.ref} runs on "
            f"{backend}, in the precision it was built in ({m.precision})"
        )
        return problems
    device = spec.device or m.device
    if device == "cuda" and spec.in_router:
        problems.append(
            f"{where}.placement: {m.ref} runs on device cuda and needs a GPU: use placement: deployment"
        )
    elif device == "cuda" and not spec.resources.num_gpus:
        problems.append(f"{where}.resources.num_gpus: {m.ref} runs on device cuda and needs a GPU")
    precision = spec.precision or (m.precision if backend == "torch" else None)
    if device == "cpu" and precision == "fp16":
        field = "precision" if spec.precision else "device"
        problems.append(f"{where}.{field}: {m.ref} in fp16 runs on device cuda only; on cpu use fp32 or bf16")
    return problems


def pin_refs(cfg: GatewayConfig, registry: Registry | None = None) -> GatewayConfig:
    """``cfg`` checked against the registry, with every ref pinned to the version it resolves to now.

    A gateway started or changed from a config that says ``student-int8`` then keeps serving the
    version it loaded, whatever is built later; only another apply moves it.
    """
    manifests = check_against_registry(cfg, registry)
    return cfg.with_changes({f"variants.{k}.ref": m.ref for k, m in manifests.items()}, "pinned config")
