"""Gateway benchmarks, side by side in one run: router overhead, dynamic batching, shadow cost, cold start.

    python -m benchmarks.gateway [--registry DIR] [--variant student-int8] [--requests 400]

Starts a local Ray cluster with the gateway (one stable variant and one shadow) plus a bare
Ray Serve deployment of the same variant on its own route, then measures, with the same
client and texts:

* overhead: p50/p99 and throughput of ``/v1/predict`` through the router against the bare
  deployment and against an in-process ``predict`` call, at concurrency 1 and 32;
* batching: throughput at concurrency 32 with ``max_batch_size`` 32 against 1 (no batching);
* shadow: client p99 with 100% of requests mirrored against none;
* cold start: seconds from deploying each variant application to it being ready.

Figures are printed; nothing is asserted. The client runs on the same 2 cores as the gateway,
so absolute figures understate a real deployment; the ratios are what the targets are about.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

PORT = 18100


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def load(
    url: str, texts: list[str], n: int, concurrency: int, headers: dict | None = None
) -> dict[str, float]:
    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency))
    lat: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        r = client.post(url, json={"inputs": [texts[i % len(texts)]]}, headers=headers or {})
        r.raise_for_status()
        lat.append(time.perf_counter() - t)

    for i in range(min(20, n)):  # warm-up
        one(i)
    lat.clear()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    client.close()
    return {"p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000, "rps": n / elapsed}


def _fmt(name: str, r: dict[str, float]) -> str:
    return f"  {name:44s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   {r['rps']:7.1f} req/s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--variant", default="student-int8")
    ap.add_argument("--shadow", default="student-int8-qat")
    ap.add_argument("--requests", type=int, default=400)
    a = ap.parse_args(argv)
    if a.registry:
        os.environ["SLIMGATE_REGISTRY"] = a.registry
    os.environ.setdefault("SLIMGATE_ADMIN_TOKEN", secrets.token_urlsafe(16))

    import ray
    from ray import serve

    from serving import control
    from serving.app import serve_config
    from serving.config import parse_config, pin_refs
    from variants import load_variant
    from variants.dataset import load_dataset

    texts = load_dataset().test.texts[:1000]

    def gateway(max_batch: int, shadow_fraction: float, with_shadow: bool = True) -> dict:
        variants = {
            "stable": {
                "ref": a.variant,
                "resources": {"num_cpus": 0.5},
                "batching": {"max_batch_size": max_batch, "batch_wait_timeout_s": 0.005},
            }
        }
        if with_shadow:
            variants["shadow"] = {"ref": a.shadow, "resources": {"num_cpus": 0.5}}
        cfg = serve_config(
            pin_refs(
                parse_config(
                    {
                        "variants": variants,
                        "routing": {"stable": "stable"},
                        "shadow": {
                            "variants": ["shadow"] if with_shadow else [],
                            "fraction": shadow_fraction,
                            "max_in_flight": 64,
                        },
                        "http": {"host": "127.0.0.1", "port": PORT},
                    }
                )
            )
        )
        # The bare baseline rides in the same declarative config, on its own route.
        stable = next(x for x in cfg["applications"] if x["name"] == "variant-stable")
        cfg["applications"].append(
            {
                "name": "bare",
                "route_prefix": "/bare",
                "import_path": "benchmarks.bare:bare_app",
                "args": {"ref": stable["args"]["ref"], "registry": stable["args"]["registry"]},
                "deployments": [{**stable["deployments"][0], "name": "Bare"}],
            }
        )
        return cfg

    def deploy(cfg: dict) -> float:
        start = time.perf_counter()
        control.deploy(cfg)
        control.wait_running(cfg)
        return time.perf_counter() - start

    # In-process reference first, before Ray takes the cores.
    p = load_variant(a.variant, threads=1)
    lat = []
    for t in texts[:300]:
        s = time.perf_counter()
        p.predict([t])
        lat.append(time.perf_counter() - s)
    inproc = {
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": _pct(lat, 99) * 1000,
        "rps": 1 / statistics.mean(lat),
    }

    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    try:
        cold_first = deploy(gateway(32, 0.0, with_shadow=False))
        cfg = gateway(32, 0.0)
        cold_shadow = deploy(cfg)

        url = f"http://127.0.0.1:{PORT}"
        print(f"variant {a.variant}; {a.requests} requests per row; client and gateway share this machine\n")
        print("overhead (router vs bare Ray Serve vs in-process):")
        print(_fmt("in-process predict (batch 1)", inproc))
        rows = {}
        for c in (1, 32):
            rows[("bare", c)] = load(f"{url}/bare", texts, a.requests, c)
            rows[("router", c)] = load(f"{url}/v1/predict", texts, a.requests, c)
            print(_fmt(f"bare Ray Serve deployment, concurrency {c}", rows[("bare", c)]))
            print(_fmt(f"router /v1/predict, concurrency {c}", rows[("router", c)]))
        for c in (1, 32):
            r, b = rows[("router", c)], rows[("bare", c)]
            print(
                f"  concurrency {c}: router adds {100 * (r['p50_ms'] / b['p50_ms'] - 1):+.1f}% to bare p50 "
                f"(target <= +25%), keeps {100 * r['rps'] / b['rps']:.0f}% of its throughput (target >= 90%)"
            )

        print("\ndynamic batching (concurrency 32):")
        batched = rows[("router", 32)]
        deploy(gateway(1, 0.0))
        unbatched = load(f"{url}/v1/predict", texts, a.requests, 32)
        print(_fmt("max_batch_size 32, wait 5 ms", batched))
        print(_fmt("max_batch_size 1 (no batching)", unbatched))
        print(
            f"  batching gives {batched['rps'] / unbatched['rps']:.2f}x throughput (target >= 3x); "
            f"p99 {batched['p99_ms']:.1f} ms vs {unbatched['p99_ms']:.1f} ms"
        )

        print("\nshadow cost (concurrency 1):")
        deploy(cfg)
        no_shadow = load(f"{url}/v1/predict", texts, a.requests, 1)
        deploy(gateway(32, 1.0))
        with_shadow = load(f"{url}/v1/predict", texts, a.requests, 1)
        print(_fmt("no shadow", no_shadow))
        print(_fmt("100% mirrored to the shadow variant", with_shadow))
        ratio = with_shadow["p99_ms"] / no_shadow["p99_ms"]
        print(f"  client p99 with shadow = {ratio:.2f}x without (target <= 1.1x)")

        print(
            f"\ncold start (deploy -> ready): router + bare + {a.variant}: {cold_first:.1f} s; "
            f"adding {a.shadow}: {cold_shadow:.1f} s"
        )
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
