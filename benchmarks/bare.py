"""A bare Ray Serve deployment of one variant: the baseline the router's overhead is measured against.

It is what a user writes by hand around the same variant, answering HTTP itself in the same
ingress mode: the gateway's own in-process variant (same loading, threads and coalesced batching),
the same response body as ``/v1/predict``, and none of the gateway's routing, metrics, admission,
feedback or shadowing. The difference between the two is what the router costs.
"""

from __future__ import annotations

import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from serving.config import VariantSpec
from serving.http_api import predict_outputs
from serving.variant_clients import InlineVariant


class BareVariant:
    def __init__(self, ref: str, registry: str | None) -> None:
        self.variant = InlineVariant.load(
            "bare", VariantSpec(ref=ref, batching={"batch_wait_timeout_s": 0.0}), registry
        )

    async def __call__(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        answer = await self.variant.predict(body["inputs"], 10.0)
        outputs = predict_outputs(self.variant.info.labels, answer.probabilities, 3)
        return Response(orjson.dumps({"outputs": outputs}), media_type="application/json")


def bare_app(args: dict):
    """Import path for a declarative Serve config: ``benchmarks.bare:bare_app``."""
    return serve.deployment(BareVariant, name="Bare").bind(args["ref"], args.get("registry"))
