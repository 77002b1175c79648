"""The README's main job: build the variants, start the gateway, send it real traffic, show what happened."""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[dict[str, Any], float]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    return out, time.perf_counter() - start


def send_traffic(
    url: str, texts: list[str], requests: int, users: int = 50, concurrency: int = 4, seed: int = 0
) -> list[tuple[dict[str, Any], float]]:
    rng = random.Random(seed)
    jobs = [([rng.choice(texts)], f"user-{rng.randrange(users)}") for _ in range(requests)]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(
            pool.map(lambda j: _post(url + "/v1/predict", {"inputs": j[0]}, {"x-user-id": j[1]}), jobs)
        )


def summarize(results: list[tuple[dict[str, Any], float]]) -> str:
    by_variant: dict[str, list[float]] = defaultdict(list)
    routes: dict[str, Counter] = defaultdict(Counter)
    for body, seconds in results:
        by_variant[body["variant"]].append(seconds * 1000)
        routes[body["variant"]][body["route"]] += 1
    lines = [f"{'variant':20s} {'requests':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  routes"]
    for key, lat in sorted(by_variant.items()):
        p99 = sorted(lat)[max(0, int(len(lat) * 0.99) - 1)]
        lines.append(f"{key:20s} {len(lat):8d} {statistics.median(lat):8.1f} {p99:8.1f}  {dict(routes[key])}")
    return "\n".join(lines)


def show_traffic(url: str, token_env: str, requests: int) -> None:
    from variants.dataset import load_dataset

    test = load_dataset().test
    print(f"\nsending {requests} requests from the test split to {url}/v1/predict (sticky by x-user-id) ...")
    results = send_traffic(url, test.texts[:2000], requests)
    print(summarize(results))
    picks = [test.examples[i] for i in range(0, len(test), len(test) // 3)][:3]
    sample, _ = _post(url + "/v1/predict", {"inputs": [e.text for e in picks]}, {})
    print("\nexample answer:")
    for text, out, truth in zip(
        [e.text for e in picks], sample["outputs"], [e.label for e in picks], strict=True
    ):
        print(f"  {text[:60]!r:64s} -> {out['label']} ({out['probability']:.2f}); true: {truth}")
    token = os.environ.get(token_env, "")
    req = urllib.request.Request(url + "/admin/disagreements", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        dis = json.loads(resp.read())
    print(f"\nshadow comparison: {dis['total']} disagreements recorded between served and shadow answers")
    for s in dis["samples"][-3:]:
        print(
            f"  {s['text'][:50]!r}: {s['served_variant']} said {s['served_label']}, "
            f"{s['shadow_variant']} said {s['shadow_label']} (TV {s['tv_distance']:.2f})"
        )
