"""A bare Ray Serve deployment of one variant: the baseline the router's overhead is measured against.

It is the gateway's own variant replica (same loading, backend and ``@serve.batch`` settings)
answering HTTP itself, so the only difference from ``/v1/predict`` is the router hop.
"""

from __future__ import annotations

from ray import serve
from starlette.requests import Request

from serving.replica import VariantReplica


class BareVariant(VariantReplica):
    async def __call__(self, request: Request) -> dict:  # type: ignore[override]
        body = await request.json()
        out = await self.predict(body["inputs"])
        return {"labels": out["probabilities"].argmax(axis=1).tolist(), "variant": out["variant"]}


def bare_app(args: dict):
    """Import path for a declarative Serve config: ``benchmarks.bare:bare_app``."""
    return serve.deployment(BareVariant, name="Bare").bind("bare", args["ref"], args.get("registry"), 1)
