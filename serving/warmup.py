"""A replica's self-measurement at warm-up: how fast this variant runs on the hardware it serves on.

A compressed variant is not faster everywhere (int8 gains several times with AVX-512 VNNI and can
lose without it), so each replica times itself once, before it is marked ready, on a fixed sample
of texts: the median latency of batch-1 calls and the throughput at the replica's batch size, with
the machine's name and the CPU flags that decide int8 speed (:mod:`variants.hardware`). The
replica exports the figures as gauges and in its ``info()``; the rollout controller's speed gate
(:mod:`serving.controller.speed`) reads them before promoting a candidate.

:func:`measure` is pure apart from the predictor and the clock it is handed, so its bounds are
unit-tested with a fake of each. It is bounded by ``budget_s`` (a few hundred ms): batch-1 calls
get the first half of it and batched calls the rest, but at least ``min_calls`` batch-1 calls and
one batched call always run, so a model slower than the budget still yields a figure (its warm-up
then takes that many calls, not the budget).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

# Fixed, so every replica of every variant is timed on the same inputs: short and long texts alike.
SAMPLE: tuple[str, ...] = (
    "a small brown dog",
    "the violin on the shelf had lost two of its strings",
    "oak",
    "a ceramic teapot with a chipped spout, kept for the garden",
    "the sparrow hopped along the fence and then flew into the hedge",
    "a steel bridge",
    "fern fronds uncurling in the shade of the old wall",
    "a cat asleep on a warm keyboard while the kettle boils",
)
BUDGET_S = 0.4
MIN_CALLS = 3
# Ceilings on the calls, so a very fast variant (or a clock that does not move) stops anyway.
MAX_CALLS = 64
MAX_BATCHES = 64


class Predictor(Protocol):
    def predict_proba(self, texts: list[str]) -> Any: ...


@dataclass(frozen=True)
class WarmupFigures:
    """What one replica measured: batch-1 p50 (seconds), texts/s at ``batch_size``, on what machine."""

    p50_s: float
    texts_per_s: float
    batch_size: int
    calls: int
    elapsed_s: float
    hardware: str
    flags: tuple[str, ...]
    device: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}


def _batch(sample: Sequence[str], size: int, start: int) -> list[str]:
    return [sample[(start + i) % len(sample)] for i in range(size)]


def measure(
    predictor: Predictor,
    clock: Callable[[], float],
    *,
    batch_size: int,
    hardware: str,
    flags: Sequence[str] = (),
    device: str = "cpu",
    sample: Sequence[str] = SAMPLE,
    budget_s: float = BUDGET_S,
    min_calls: int = MIN_CALLS,
) -> WarmupFigures:
    """Time ``predictor`` on ``sample`` within ``budget_s`` of ``clock`` (see the module docstring)."""
    if batch_size < 1 or not sample or budget_s <= 0 or min_calls < 1:
        raise ValueError("measure needs batch_size >= 1, a sample, budget_s > 0 and min_calls >= 1")
    start = clock()
    half = start + budget_s / 2
    singles: list[float] = []
    while len(singles) < min_calls or (clock() < half and len(singles) < MAX_CALLS):
        t0 = clock()
        predictor.predict_proba([sample[len(singles) % len(sample)]])
        singles.append(clock() - t0)
    texts, spent, batches = 0, 0.0, 0
    end = start + budget_s
    while batches < 1 or (clock() < end and batches < MAX_BATCHES):
        t0 = clock()
        predictor.predict_proba(_batch(sample, batch_size, batches * batch_size))
        spent += clock() - t0
        texts += batch_size
        batches += 1
    # A clock that did not move (a coarse timer around very fast calls) still gives a finite figure,
    # since a gauge (and strict JSON) has no infinity.
    throughput = texts / max(spent, 1e-9)
    return WarmupFigures(
        p50_s=statistics.median(singles),
        texts_per_s=throughput,
        batch_size=batch_size,
        calls=len(singles) + batches,
        elapsed_s=clock() - start,
        hardware=hardware,
        flags=tuple(flags),
        device=device,
    )


def this_machine(device: str = "cpu") -> tuple[str, tuple[str, ...]]:
    """(name, relevant CPU flags) of the machine this process runs on, named as ``variants eval`` does.

    On a CUDA device the name is the GPU's, followed by the host's line, since both decide speed.
    """
    from variants import hardware

    name = hardware.describe()
    if device.startswith("cuda"):
        name = f"{hardware.cuda_device_name() or 'CUDA device'} on {name}"
    return name, tuple(hardware.cpu_flags())


def measure_here(predictor: Predictor, batch_size: int, device: str = "cpu") -> WarmupFigures:
    """:func:`measure` on this process's machine and clock: what a replica (or the router, for the
    variants placed in it) runs once its artifact has answered a first inference."""
    import time

    hardware, flags = this_machine(device)
    return measure(
        predictor, time.perf_counter, batch_size=batch_size, hardware=hardware, flags=flags, device=device
    )


def record(metrics: Any, figures: WarmupFigures, variant: str, replica: str) -> None:
    """State the figures as gauges (again every second: Ray forgets a gauge that is not set again)."""
    from serving.metrics import REPLICA_HARDWARE, WARMUP_P50_SECONDS, WARMUP_THROUGHPUT

    labels = {"variant": variant, "replica": replica}
    metrics.set(WARMUP_P50_SECONDS, figures.p50_s, **labels)
    metrics.set(WARMUP_THROUGHPUT, figures.texts_per_s, **labels)
    flags = " ".join(figures.flags)
    metrics.set(REPLICA_HARDWARE, 1, **labels, hardware=figures.hardware, flags=flags, device=figures.device)
