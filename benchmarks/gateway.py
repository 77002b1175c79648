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
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.load import BODY, Load, hey, hey_binary, median_of
from variants.hardware import describe

PORT = 18100
GRPC_PORT = 19100
SECTIONS = ("ceiling", "gateway", "placement", "batching", "shadow", "peers", "overload", "soak")
TEXT_HEADERS = {"x-user-id": "benchmark-user"}


def _print(text: str = "") -> None:
    print(text, flush=True)


def _runs(url: str, n: int, concurrency: int, headers: dict[str, str] | None = None, rounds: int = 3) -> Load:
    hey(url, n=min(n, 300), concurrency=concurrency, headers=headers)  # warm-up
    return median_of([hey(url, n=n, concurrency=concurrency, headers=headers) for _ in range(rounds)])


# -- Ray's own ceiling ---------------------------------------------------------------------------
def ceiling(a: argparse.Namespace, out: dict[str, Any]) -> None:
    _print("Ray Serve's own ceiling (no-op deployment, one text per request, concurrency 32):")
    for mode in ("proxy", "direct", "haproxy"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ray_noop", mode, str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"the no-op Ray Serve app did not start in mode {mode}")
            for app in ("noop", "hop"):
                r = _runs(f"http://127.0.0.1:{PORT}/{app}", a.requests, 32)
                out[f"ceiling/{mode}/{app}"] = r
                what = "no-op" if app == "noop" else "no-op + one handle hop"
                _print(r.line(f"{mode:8s} {what}"))
        finally:
            proc.stdin.close()
            proc.wait(timeout=120)


# -- the gateway -----------------------------------------------------------------------------------
def _gateway_config(registry: str | None, variants: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "variants": variants,
        "routing": {"stable": next(iter(variants)), "sticky_key": {"header": "x-user-id"}},
        "http": {"host": "127.0.0.1", "port": PORT, "grpc_port": GRPC_PORT},
        "registry": registry,
    }
    for path, value in extra.items():
        node = cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def _batching(size: int) -> dict[str, Any]:
    return {"max_batch_size": size, "batch_wait_timeout_s": 0.0}


@contextmanager
def serving(cfg: dict[str, Any], *, bare: str | None = None):
    """``slimgate serve`` with ``cfg`` (plus a bare deployment of ``bare`` on /bare), yielding its URL."""
    work = Path(tempfile.mkdtemp(prefix="slimgate-bench-"))
    path, ready = work / "gateway.yaml", work / "ready"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "SLIMGATE_ADMIN_TOKEN": os.environ.get("SLIMGATE_ADMIN_TOKEN") or secrets.token_urlsafe(16),
    }
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "serve",
            str(path),
            "--metrics-port",
            "18180",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"slimgate serve did not start:\n{(work / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        if bare is not None:
            _deploy_bare(cfg, bare)
        yield f"http://127.0.0.1:{PORT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _deploy_bare(cfg: dict[str, Any], ref: str) -> None:
    """Add the bare deployment next to the running gateway, in the same Ray cluster and ingress."""
    from serving import control
    from serving.app import serve_config
    from serving.config import parse_config, pin_refs

    gateway = pin_refs(parse_config(cfg))
    sc = serve_config(gateway)
    sc["http_options"]["host"] = "127.0.0.1"
    pinned = next(v.ref for k, v in gateway.variants.items() if v.name == ref)
    sc["applications"].append(
        {
            "name": "bare",
            "route_prefix": "/bare",
            "import_path": "benchmarks.bare:bare_app",
            "args": {"ref": pinned, "registry": str(gateway.registry) if gateway.registry else None},
            "deployments": [
                {"name": "Bare", "max_ongoing_requests": 512, "ray_actor_options": {"num_cpus": 0.25}}
            ],
        }
    )
    control.deploy(sc)
    control.wait_running(sc)


def _evaluation(registry: str | None) -> dict[str, dict[str, Any]]:
    """The registry's evaluation table (measured on this machine by `slimgate variants build`)."""
    from variants import Registry

    report = Registry(registry).root / "_reports" / "evaluation.json"
    if not report.is_file():
        return {}
    return {r["name"]: r.get("metrics") or {} for r in json.loads(report.read_text()).get("variants", [])}


def _in_process_ratio(table: dict[str, dict[str, Any]], fast: str, slow: str) -> tuple[float, str] | None:
    f, s = (table.get(n, {}).get("throughput_per_s") for n in (fast, slow))
    if not f or not s:
        return None
    return f / s, f"{f:.0f} vs {s:.0f} texts/s at batch 32"


def _in_process_texts_per_s(registry: str | None, names: list[str], threads: int) -> dict[str, float]:
    """Texts/s at batch 32 of the benchmark's own text, each variant in a fresh process (same threads)."""
    code = (
        "import json, sys, time\n"
        "from variants import load_variant\n"
        "name, threads, text, registry = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] or None\n"
        "p = load_variant(name, registry=registry, threads=threads)\n"
        "batch = [text] * 32\n"
        "for _ in range(3): p.predict_proba(batch)\n"
        "n, start = 0, time.perf_counter()\n"
        "while time.perf_counter() - start < 3: p.predict_proba(batch); n += 32\n"
        "print(n / (time.perf_counter() - start))\n"
    )
    text = json.loads(BODY)["inputs"][0]
    out = {}
    for name in names:
        r = subprocess.run(
            [sys.executable, "-c", code, name, str(threads), text, registry or ""],
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = float(r.stdout.strip().splitlines()[-1])
    return out


def gateway(a: argparse.Namespace, out: dict[str, Any]) -> None:
    table = _evaluation(a.registry)
    # The same intra-op threads as the evaluation table, so the end-to-end ratio and the in-process
    # one compare like with like.
    threads = int(table.get("teacher", {}).get("threads", 1))
    variants = {
        k: {"ref": k, "threads": threads, "batching": _batching(32 if k == "teacher" else 16)}
        for k in ("student-int8", "teacher-int8", "teacher-onnx", "teacher")
    }
    _print(f"\n(variants run with {threads} intra-op threads, as in the evaluation table)")
    for ingress in ("haproxy", "proxy"):
        cfg = _gateway_config(a.registry, variants, **{"http.ingress": ingress})
        _print(f"\ngateway, {ingress} ingress (sticky routing and metrics on, no shadow, concurrency 32):")
        with serving(cfg, bare="student-int8") as url:
            routed = _runs(f"{url}/v1/predict", a.requests, 32, TEXT_HEADERS)
            bare = _runs(f"{url}/bare", a.requests, 32)
            out[f"gateway/{ingress}/routed"], out[f"gateway/{ingress}/bare"] = routed, bare
            _print(routed.line("routed student-int8 (stable, sticky)"))
            _print(bare.line("bare Ray Serve deployment of student-int8"))
            _print(
                f"  router vs bare: p50 {routed.p(50) / bare.p(50):.2f}x (target <= 1.25x), throughput "
                f"{routed.ok_rps() / bare.ok_rps():.2f}x (target >= 0.9x)"
            )
            if ingress != "haproxy":
                continue
            for key in ("teacher-int8", "teacher-onnx", "teacher"):
                n = a.requests if key != "teacher" else max(500, a.requests // 6)
                r = _runs(f"{url}/v1/predict", n, 32, {"x-slimgate-variant": key})
                out[f"gateway/pinned/{key}"] = r
                _print(r.line(f"pinned {key}"))
    routed, teacher = out["gateway/haproxy/routed"], out["gateway/pinned/teacher"]
    e2e = routed.ok_rps() / teacher.ok_rps()
    _print(f"  student-int8 / teacher end to end (req/s, one text per request): {e2e:.2f}x")
    inproc = _in_process_ratio(table, "student-int8", "teacher")
    if inproc is not None:
        ratio, how = inproc
        _print(
            f"    in process, evaluation table ({how}): {ratio:.2f}x; "
            f"share kept {e2e / ratio:.2f} (target >= 0.8)"
        )
    same = _in_process_texts_per_s(a.registry, ["student-int8", "teacher"], threads)
    ratio = same["student-int8"] / same["teacher"]
    _print(
        f"    in process, this benchmark's text at batch 32 ({same['student-int8']:.0f} vs "
        f"{same['teacher']:.0f} texts/s): {ratio:.2f}x; share kept {e2e / ratio:.2f} (target >= 0.8)"
    )
    noop = out.get("ceiling/haproxy/noop")
    if noop is not None:
        # Ray Serve's own cost of one request (HAProxy, uvicorn, the replica's wrapper, the load
        # generator) is in every request before slimgate does anything: it bounds the ratio.
        o = 1 / noop.ok_rps()
        bound = (o + 1 / same["teacher"]) / (o + 1 / same["student-int8"])
        _print(
            f"    with Ray Serve's own per-request cost ({1000 * o:.2f} ms of this machine per request, "
            f"from its no-op ceiling) the ratio can be at most {bound:.2f}x: "
            f"share at most {bound / ratio:.2f}"
        )
    r = out["gateway/haproxy/routed"]
    _print(
        f"  routed student-int8: {r.ok_rps():.0f} req/s (target >= 500), "
        f"p50 {1000 * r.p(50):.1f} ms (target <= 60)"
    )


def placement(a: argparse.Namespace, out: dict[str, Any]) -> None:
    _print("\nplacement of student-int8 (HAProxy ingress):")
    for where in ("router", "deployment"):
        spec: dict[str, Any] = {"ref": "student-int8", "batching": _batching(16)}
        if where == "deployment":
            spec.update(placement="deployment", resources={"num_cpus": 0.5})
        with serving(_gateway_config(a.registry, {"v": spec})) as url:
            for c in (1, 32):
                r = _runs(f"{url}/v1/predict", a.requests if c > 1 else a.requests // 3, c)
                out[f"placement/{where}/{c}"] = r
                label = "in the router" if where == "router" else "own deployment (coalesced hop)"
                _print(r.line(f"{label}, concurrency {c}"))


def batching(a: argparse.Namespace, out: dict[str, Any]) -> None:
    _print("\ndynamic batching, concurrency 32 (32 texts per batch against 1):")
    keys = ("student-int8", "teacher-int8", "teacher-onnx", "teacher")
    results: dict[tuple[str, int], Load] = {}
    for size in (32, 1):
        variants = {k: {"ref": k, "batching": _batching(size)} for k in keys}
        with serving(_gateway_config(a.registry, variants)) as url:
            for k in keys:
                n = a.requests if k != "teacher" else max(500, a.requests // 6)
                results[(k, size)] = _runs(f"{url}/v1/predict", n, 32, {"x-slimgate-variant": k})
    for k in keys:
        on, off = results[(k, 32)], results[(k, 1)]
        out[f"batching/{k}"] = (on, off)
        target = ">= 1.8x" if k == "teacher" else ">= 0.95x"
        _print(
            f"  {k:14s} {on.ok_rps():7.1f} vs {off.ok_rps():7.1f} req/s: {on.ok_rps() / off.ok_rps():.2f}x "
            f"(target {target}); p99 {1000 * on.p(99):.0f} vs {1000 * off.p(99):.0f} ms"
        )


def shadow(a: argparse.Namespace, out: dict[str, Any]) -> None:
    _print("\nshadow cost (stable student-int8 in the router, every request mirrored):")
    n = a.requests // 3
    for shadow_ref, where in (
        ("student-int8-qat", "router"),
        ("teacher-int8", "router"),
        ("teacher-int8", "deployment"),
    ):
        spec: dict[str, Any] = {"ref": shadow_ref}
        if where == "deployment":
            spec.update(placement="deployment", resources={"num_cpus": 0.5})
        variants = {"stable": {"ref": "student-int8"}, "shadow": spec}
        rows = {}
        for fraction in (0.0, 1.0):
            cfg = _gateway_config(
                a.registry, variants, **{"shadow.variants": ["shadow"], "shadow.fraction": fraction}
            )
            with serving(cfg) as url:
                closed = _runs(f"{url}/v1/predict", n, 1)
                # 100 requests/s leaves the CPU idle between requests, as a gateway below capacity is.
                paced = median_of(
                    [hey(f"{url}/v1/predict", n=n // 2, concurrency=1, rate_per_worker=100) for _ in range(3)]
                )
            rows[fraction] = (closed, paced)
        out[f"shadow/{shadow_ref}/{where}"] = rows
        what = f"{shadow_ref} ({where})"
        for label, i in (("back to back, concurrency 1", 0), ("paced at 100 req/s", 1)):
            base, mirrored = rows[0.0][i], rows[1.0][i]
            _print(
                f"  {what:34s} {label:28s} p99 {1000 * base.p(99):5.1f} -> {1000 * mirrored.p(99):5.1f} ms: "
                f"{mirrored.p(99) / base.p(99):.2f}x (target <= 1.1x); "
                f"{base.ok_rps():.0f} -> {mirrored.ok_rps():.0f} req/s"
            )


def peers(a: argparse.Namespace, out: dict[str, Any]) -> None:
    _print("\npeers serving student-int8 on this machine (one text per request, concurrency 32):")
    for kind in ("starlette", "litserve", "litserve-batch16"):
        cmd = [sys.executable, "-m", "benchmarks.peers", kind, str(PORT)]
        if a.registry:
            cmd += ["--registry", a.registry]
        # Its own process group: LitServe starts worker processes that must go with it.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{PORT}/predict"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if hey(url, n=1, concurrency=1).count(200) == 1:
                        break
                except subprocess.CalledProcessError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"peer {kind} did not start")
                time.sleep(1)
            r = _runs(url, a.requests, 32)
            out[f"peers/{kind}"] = r
            _print(r.line(kind))
        finally:
            _stop_group(proc)
    if "gateway/haproxy/routed" in out:
        best = max(out["peers/litserve"].ok_rps(), out["peers/litserve-batch16"].ok_rps())
        mine = out["gateway/haproxy/routed"].ok_rps()
        _print(
            f"  routed student-int8 {mine:.0f} req/s vs LitServe's best {best:.0f}: "
            f"{mine / best:.2f}x (target > 1)"
        )


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process and everything it started (its own session), then wait for it."""
    import signal

    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers may outlive their parent for a moment; wait until the group is gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


# -- overload and soak ---------------------------------------------------------------------------------
def _replica_pids() -> list[int]:
    """Every Ray Serve replica process on this machine (the router and the variants)."""
    import psutil

    return sorted(
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any("ServeReplica:" in part for part in (p.info["cmdline"] or []))
    )


def _rss_mb(pids: list[int]) -> dict[int, float]:
    import psutil

    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids if psutil.pid_exists(pid)}


def _replica_ids() -> set[str]:
    from serving import control

    apps = control.status()["applications"]
    return {
        r["replica_id"] for app in apps.values() for d in app["deployments"].values() for r in d["replicas"]
    }


def overload(a: argparse.Namespace, out: dict[str, Any]) -> None:
    variants = {"student-int8": {"ref": "student-int8", "batching": _batching(16)}}
    from serving.config import AdmissionConfig

    objective = a.objective_s if a.objective_s is not None else AdmissionConfig().latency_objective_s
    cfg = _gateway_config(a.registry, variants, **{"admission.latency_objective_s": objective})
    with serving(cfg) as url:
        cap = _runs(f"{url}/v1/predict", a.requests, 32, TEXT_HEADERS).ok_rps()
        workers = 128
        pids = _replica_pids()
        before_ids, before_rss = _replica_ids(), _rss_mb(pids)
        if "overload" in a.only:
            _print(
                f"\noverload: 2x the measured capacity ({cap:.0f} req/s) for {a.overload_s} s, "
                f"objective {objective} s:"
            )
            r = hey(
                f"{url}/v1/predict",
                duration_s=a.overload_s,
                concurrency=workers,
                rate_per_worker=2 * cap / workers,
                headers=TEXT_HEADERS,
            )
            after_ids, after_rss = _replica_ids(), _rss_mb(pids)
            out["overload"] = r
            statuses = r.statuses()
            other = {s: n for s, n in statuses.items() if s not in (200, 503)}
            _print(
                f"  offered {r.rps:.0f} req/s: answered {r.count(200)}, shed {r.count(503)}, "
                f"other {other or 'none'}"
            )
            _print(f"  shed answers p99 {1000 * r.p(99, 503):.1f} ms (target <= 50 ms)")
            _print(
                f"  admitted p99 {1000 * r.p(99, 200):.1f} ms (objective {1000 * objective:.0f} ms); "
                f"answered {r.ok_rps():.0f} req/s"
            )
            _print(
                f"  replicas restarted: {len(before_ids - after_ids)}; memory (MB) before -> after: "
                + ", ".join(
                    f"{before_rss[p]:.0f} -> {after_rss.get(p, float('nan')):.0f}" for p in before_rss
                )
            )
        if "soak" in a.only:
            _soak(a, url, cap, pids, out)


def _soak(a: argparse.Namespace, url: str, cap: float, pids: list[int], out: dict[str, Any]) -> None:
    """Half the capacity for ``--soak-s``; memory sampled as it runs (the feedback window fills first)."""
    import threading

    _print(f"\nsoak: half the capacity ({cap / 2:.0f} req/s) for {a.soak_s} s:")
    samples: list[tuple[float, dict[int, float]]] = []
    done = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not done.wait(10.0 if samples else 0.0):
            samples.append((time.monotonic() - start, _rss_mb(pids)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    r = hey(
        f"{url}/v1/predict",
        duration_s=a.soak_s,
        concurrency=16,
        rate_per_worker=cap / 2 / 16,
        headers=TEXT_HEADERS,
    )
    done.set()
    sampler.join()
    samples.append((float(a.soak_s), _rss_mb(pids)))
    out["soak"] = r
    errors = r.total - r.count(200)
    _print(f"  {r.total} requests, {errors} not answered with 200 {r.statuses()} (target 0)")
    _print(f"  p50 {1000 * r.p(50):.1f} ms, p99 {1000 * r.p(99):.1f} ms")
    first, half = samples[0][1], next(m for t, m in samples if t >= a.soak_s / 2)
    last = samples[-1][1]

    def growth(x: dict[int, float], y: dict[int, float]) -> float:
        return max((y[p] - x[p]) / x[p] for p in x if p in y)

    _print(
        f"  replica memory (MB) at 0 / {a.soak_s // 2} / {a.soak_s} s: "
        + "; ".join(f"{first[p]:.0f} / {half.get(p, 0):.0f} / {last.get(p, 0):.0f}" for p in first)
    )
    _print(
        f"  growth over the second half {100 * growth(half, last):+.1f}% (target < 5%); over the whole run "
        f"{100 * growth(first, last):+.1f}%, the first minutes filling the bounded feedback window "
        "(feedback.max_entries answers, about 300 bytes each)"
    )


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
    _print(f"machine: {describe()}")
    _print(f"load: {hey_binary()} (hey), on the same machine; every figure is the median of 3 runs\n")
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
