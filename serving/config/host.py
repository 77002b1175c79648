"""A gateway config against the host ``slimgate serve`` starts it on: GPU variants need a GPU here.

``slimgate serve`` runs a Ray cluster of this one host, so a variant whose replicas ask Ray for
``resources.num_gpus`` can only be placed if this host has a CUDA device; otherwise Ray would keep
its replicas pending for ever and the gateway would wait for a variant that never starts. The
probe is :func:`variants.hardware.cuda_unavailable_reason` (torch is imported there, only when a
config has GPU variants): the gateway never imports a backend library itself. A cluster started
elsewhere (``slimgate deploy``, KubeRay) has its own GPU nodes and is not checked here.
"""

from __future__ import annotations

from collections.abc import Callable

from serving.config.base import ConfigError
from serving.config.schema import GatewayConfig


def gpu_variants(cfg: GatewayConfig) -> dict[str, float]:
    """Variant key -> GPUs per replica, for every variant whose replicas ask Ray for a GPU."""
    return {
        key: float(spec.resources.num_gpus)
        for key, spec in sorted(cfg.variants.items())
        if not spec.in_router and spec.resources.num_gpus
    }


def check_host_gpus(cfg: GatewayConfig, probe: Callable[[], str | None] | None = None) -> None:
    """Refuse a config with GPU variants on a host without a CUDA device, each field named.

    ``probe`` returns None when there is a usable GPU, else why not; by default the real one.
    """
    wanted = gpu_variants(cfg)
    if not wanted:
        return
    if probe is None:
        from variants.hardware import cuda_unavailable_reason

        probe = cuda_unavailable_reason
    reason = probe()
    if reason is None:
        return
    lines = "\n".join(
        f"  variants.{key}.resources.num_gpus: asks for {n:g} GPU per replica, but this host has "
        f"none ({reason}); Ray could never place its replicas"
        for key, n in wanted.items()
    )
    raise ConfigError(
        f"gateway config needs a GPU that this host does not have:\n{lines}\n"
        "  serve it on a host (or a Ray cluster: slimgate deploy, helm/) with a CUDA device, or "
        "remove these variants"
    )
