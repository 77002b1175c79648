"""A bare Ray Serve deployment of one variant: the baseline the router's overhead is measured against.

Same loading API, same backend, same request JSON, no routing, no batching, no shadow.
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class BareVariant:
    def __init__(self, ref: str) -> None:
        from variants import load_variant
        from variants.registry import parse_ref

        name, version = parse_ref(ref)
        self.predictor = load_variant(name, version, threads=1)

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        p = self.predictor.predict(body["inputs"])
        return {"labels": p.labels, "probabilities": p.probabilities.tolist()}


def bare_app(args: dict):
    """Import path for a declarative Serve config: ``benchmarks.bare:bare_app`` with ``{"ref": ...}``."""
    return BareVariant.bind(args["ref"])
