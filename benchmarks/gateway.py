"""Gateway benchmarks, side by side in one run, load from ``hey`` (a compiled load generator).

    python -m benchmarks.gateway [--registry DIR] [--requests 4000] [--overload-s 60] [--soak-s 600]
                                 [--only SECTION ...]

Sections (each prints its figures and the targets of the fast-path issue next to them):

* ``ceiling``: Ray Serve's own no-op ceiling in each ingress mode (default proxy, throughput-
  optimized direct ingress, HAProxy), without and with one handle hop, each in a fresh cluster;
* ``gateway``: the gateway as ``slimgate serve`` starts it (HAProxy ingress), sticky routing and
  metrics on, no shadow: routed ``student-int8`` against a bare Ray Serve deployment of the same
  variant in the same ingress mode, and pinned ``teacher-int8`` / ``teacher-onnx`` / ``teacher``;
  the end-to-end ``student-int8`` / ``teacher`` ratio against the same ratio in process (the
  registry's evaluation table, measured on this machine); the same in the ``proxy`` ingress mode;
* ``placement``: a variant answered inside the router against the same variant as a deployment of
  its own (a coalesced handle hop), at concurrency 1 and 32;
* ``batching``: each variant with batching (32 texts) against without (1), concurrency 32;
* ``shadow``: client p99 at concurrency 1 with 100% of requests mirrored to a second variant;
* ``peers``: LitServe (unbatched, batch 16) and a plain in-process Starlette app serving the same
  variant on the same box;
* ``overload``: twice the measured capacity for ``--overload-s``: shed answers' p99, admitted p99
  against the objective, status codes, replica restarts, router memory;
* ``soak``: half the capacity for ``--soak-s``: errors and the growth of router and replica memory.

Client, HAProxy, Ray and the replicas share this machine's cores: absolute figures understate a
bigger machine, and every ratio is measured within one run. The CPU is printed first.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from benchmarks.gateway_comparisons import batching, ceiling, gateway, peers, placement, shadow
from benchmarks.gateway_harness import say
from benchmarks.gateway_stress import overload
from benchmarks.load import hey_binary
from variants.hardware import describe

SECTIONS = ("ceiling", "gateway", "placement", "batching", "shadow", "peers", "overload", "soak")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default=None)
    ap.add_argument(
        "--requests", type=int, default=4000, help="requests per measurement (each taken 3 times)"
    )
    ap.add_argument("--overload-s", type=int, default=60)
    ap.add_argument("--soak-s", type=int, default=600)
    ap.add_argument(
        "--objective-s",
        type=float,
        default=None,
        help="admission.latency_objective_s in the overload test (default: the config's default)",
    )
    ap.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    a = ap.parse_args(argv)
    if a.registry:
        os.environ["SLIMGATE_REGISTRY"] = a.registry
    hey_binary()
    say(f"machine: {describe()}")
    say(f"load: {hey_binary()} (hey), on the same machine; every figure is the median of 3 runs\n")
    out: dict[str, Any] = {}
    for name, fn in (
        ("ceiling", ceiling),
        ("gateway", gateway),
        ("placement", placement),
        ("batching", batching),
        ("shadow", shadow),
        ("peers", peers),
    ):
        if name in a.only:
            fn(a, out)
    if "overload" in a.only or "soak" in a.only:
        overload(a, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
