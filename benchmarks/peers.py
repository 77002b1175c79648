"""The servers a user would pick instead of slimgate, serving the same variant on the same box.

    python -m benchmarks.peers KIND PORT [--registry DIR] [--variant student-int8]

KIND: ``starlette`` (a plain in-process Starlette app on uvicorn, the model called inline: the
least a Python server can do per request), ``litserve`` (Lightning's LitServe, unbatched) or
``litserve-batch16`` (LitServe with its dynamic batching, 16 texts, 5 ms). Each loads the variant
through the same loading API with one intra-op thread and answers ``POST /predict`` with the
top label and its probability. Started and stopped by ``benchmarks.gateway``.
"""

from __future__ import annotations

import argparse

import numpy as np


def _load(variant: str, registry: str | None):
    from variants import load_variant

    p = load_variant(variant, registry=registry, threads=1)
    p.predict_proba(["warm-up"])
    return p


def starlette_app(variant: str, registry: str | None):
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    p = _load(variant, registry)

    async def predict(request: Request) -> Response:
        texts = orjson.loads(await request.body())["inputs"]
        probs = p.predict_proba(texts)
        idx = probs.argmax(axis=1)
        out = [{"label": p.label_names[i], "probability": float(probs[j, i])} for j, i in enumerate(idx)]
        return Response(orjson.dumps({"outputs": out}), media_type="application/json")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


try:  # only this script needs LitServe (the dev extra installs it)
    import litserve as ls

    _LitAPI = ls.LitAPI
except ImportError:  # pragma: no cover
    _LitAPI = object


class LitVariant(_LitAPI):
    """At module level: LitServe pickles its API into its worker processes."""

    def __init__(self, variant: str, registry: str | None, batch: int) -> None:
        super().__init__(max_batch_size=batch, batch_timeout=0.005 if batch > 1 else 0.0)
        self.variant, self.registry = variant, registry

    def setup(self, device):
        self.p = _load(self.variant, self.registry)

    def decode_request(self, request):
        return request["inputs"][0]

    def predict(self, x):
        texts = x if isinstance(x, list) else [x]
        probs = self.p.predict_proba(texts)
        rows = [
            (self.p.label_names[int(i)], float(r[i]))
            for r, i in zip(probs, np.argmax(probs, axis=1), strict=True)
        ]
        return rows if isinstance(x, list) else rows[0]

    def encode_response(self, output):
        return {"outputs": [{"label": output[0], "probability": output[1]}]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["starlette", "litserve", "litserve-batch16"])
    ap.add_argument("port", type=int)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--variant", default="student-int8")
    a = ap.parse_args(argv)
    if a.kind == "starlette":
        import uvicorn

        uvicorn.run(
            starlette_app(a.variant, a.registry),
            host="127.0.0.1",
            port=a.port,
            log_level="warning",
            access_log=False,
        )
    else:
        import litserve as ls

        api = LitVariant(a.variant, a.registry, 16 if a.kind.endswith("16") else 1)
        server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
        server.run(host="127.0.0.1", port=a.port, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
