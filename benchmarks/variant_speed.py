"""Side-by-side throughput of registered variants on this machine, in one process, same threads.

    python -m benchmarks.variant_speed [--registry DIR] [--threads 2] [--rounds 5]

Every variant sees the same batches of test texts (tokenization included) with the same
intra-op thread count. Every measurement runs in a fresh process with no other variant
alive (a runtime's idle, spinning thread pool would otherwise slow its neighbours), and
rounds are interleaved (A B C A B C ...) so that a slow phase of the machine hits every
variant alike; the median round is reported. Prints the ratios the
variant-factory issue sets as targets, with the accuracy retention recorded at build time
and the CPU's VNNI/AMX flags.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection

from variants import Registry, load_variant
from variants.dataset import load_dataset
from variants.hardware import cpu_flags

TARGETS = [
    # (fast, slow, min speed-up, min retention of `fast`)
    ("student-int8", "teacher", 8.0, 0.98),
    ("teacher-int8", "teacher-onnx", 2.0, 0.995),
]


def _measure(
    conn: Connection, registry: str | None, name: str, version: int, threads: int, batches: list[list[str]]
) -> None:
    import torch

    torch.set_num_threads(threads)
    p = load_variant(name, version, registry=registry, threads=threads)
    for b in batches[:3]:  # warm-up: first-call allocations and kernel selection
        p.predict_proba(b)
    start = time.perf_counter()
    for b in batches:
        p.predict_proba(b)
    conn.send(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=10, help="batches per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", nargs="*", default=None, help="default: latest version of every variant")
    a = ap.parse_args(argv)

    reg = Registry(a.registry)
    manifests = [reg.get(n) for n in (a.variants or reg.names())]
    if not manifests:
        raise SystemExit(f"no variants in {reg.root}; run `slimgate variants build` first")
    texts = load_dataset().test.texts
    batches = [texts[i * a.batch_size : (i + 1) * a.batch_size] for i in range(a.batches)]
    ctx = mp.get_context("spawn")
    rates: dict[str, list[float]] = {m.name: [] for m in manifests}
    for _ in range(a.rounds):
        for m in manifests:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_measure, args=(child, a.registry, m.name, m.version, a.threads, batches)
            )
            proc.start()
            rates[m.name].append(a.batches * a.batch_size / parent.recv())
            proc.join()
    med = {n: statistics.median(r) for n, r in rates.items()}
    retention = {m.name: (m.metrics or {}).get("retention") for m in manifests}
    base = med.get("teacher")

    print(
        f"CPU flags: {' '.join(cpu_flags()) or 'none found'}; threads={a.threads}; batch={a.batch_size}; "
        f"{a.rounds} interleaved rounds of {a.batches} batches (median shown)"
    )
    print(f"{'variant':22s} {'texts/s':>9s} {'vs teacher':>11s} {'retention':>10s}")
    for m in manifests:
        r = retention[m.name]
        vs = f"{med[m.name] / base:10.2f}x" if base else "         -"
        print(f"{m.ref:22s} {med[m.name]:9.0f} {vs} {'' if r is None else f'{r:10.4f}'}")
    print()
    ok = True
    for fast, slow, speedup, min_ret in TARGETS:
        if fast not in med or slow not in med:
            print(f"{fast} vs {slow}: not both built")
            continue
        ratio = med[fast] / med[slow]
        ret = retention.get(fast)
        met = ratio >= speedup and ret is not None and ret >= min_ret
        ok &= met
        ret_s = "n/a" if ret is None else f"{ret:.4f}"
        print(
            f"{fast} / {slow}: {ratio:.2f}x (target >= {speedup}x), retention {ret_s} "
            f"(target >= {min_ret}) -> {'MET' if met else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
