"""Ray Serve's own ceiling in one ingress mode: a no-op deployment, and a no-op behind one handle hop.

    python -m benchmarks.ray_noop MODE PORT      (MODE: proxy | direct | haproxy)

Started by ``benchmarks.gateway`` in a fresh process per mode (Ray reads its ingress settings from
the environment when it starts). It serves until stdin closes:

* ``POST /noop``: parses the JSON body and answers a small JSON object, nothing else;
* ``POST /hop``: the same, through one deployment handle call to a second no-op deployment.

``proxy`` is Ray Serve's default Python proxy; ``direct`` its throughput-optimized preset (direct
ingress to the replicas, gRPC between deployments, user code on the replica's loop) behind the
proxy; ``haproxy`` the same preset behind Ray's HAProxy ingress, which slimgate uses.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def environment(mode: str) -> dict[str, str]:
    from serving.config import parse_config
    from serving.ray_env import single_host_env

    # A gateway config only for its http section: the same single-host environment `slimgate serve` uses.
    cfg = parse_config(
        {
            "variants": {"v": {"ref": "none"}},
            "routing": {"stable": "v"},
            "http": {"ingress": "haproxy" if mode == "haproxy" else "proxy"},
        }
    )
    env = single_host_env(cfg, Path(tempfile.mkdtemp(prefix="slimgate-noop-")))
    if mode == "direct":
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    return env


def main(argv: list[str]) -> int:
    mode, port = argv[0], int(argv[1])
    os.environ.update(environment(mode))
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    opts = {"max_ongoing_requests": 512, "ray_actor_options": {"num_cpus": 0.1}}

    @serve.deployment(**opts)
    class Inner:
        async def __call__(self, texts: list[str]) -> dict:
            return {"n": len(texts)}

    @serve.deployment(**opts)
    class Noop:
        async def __call__(self, request: Request) -> JSONResponse:
            body = await request.json()
            return JSONResponse({"n": len(body["inputs"])})

    @serve.deployment(**opts)
    class Hop:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, request: Request) -> JSONResponse:
            body = await request.json()
            return JSONResponse(await self.inner.remote(body["inputs"]))

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Noop.bind(), name="noop", route_prefix="/noop")
        serve.run(Hop.bind(Inner.bind()), name="hop", route_prefix="/hop")
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        serve.shutdown()
        ray.shutdown()
        from serving.ray_env import stop_haproxy

        stop_haproxy(Path(os.environ.get("SLIMGATE_RUNTIME_DIR", "/nonexistent")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
