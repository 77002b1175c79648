"""The ``slo`` section: the latency objective the SLO guard keeps, and what it may give up for it.

The guard itself (:mod:`serving.slo_guard`) runs in every router replica; this model is only its
settings. With ``objective_s`` null (the default) the guard is off and routing is exactly the
configured split.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictFloat

from serving.config.base import LIVE, Section, StrictPositiveInt, VariantKey, changes


@changes(
    objective_s=LIVE,
    quantile=LIVE,
    accuracy_floor=LIVE,
    brownout_to=LIVE,
    react_s=LIVE,
    recover_s=LIVE,
    headroom=LIVE,
    min_requests=LIVE,
    min_concurrency=LIVE,
)
class SloConfig(Section):
    """Brownout under load: a variant that breaks the latency objective because it is overloaded
    hands part of its traffic to a cheaper deployable variant, and takes it back when load falls."""

    objective_s: Annotated[StrictFloat, Field(gt=0, le=60)] | None = Field(
        None,
        description="Latency objective of every served variant, in seconds (measured by the router around "
        "the variant call). null = the guard is off.",
    )
    quantile: Literal["p99", "p95"] = Field(
        "p99", description="Which latency quantile the objective bounds, over each reaction interval."
    )
    accuracy_floor: Annotated[StrictFloat, Field(ge=0, le=1)] | None = Field(
        None,
        description="Lowest test accuracy (the registry's evaluation) a brownout target may have: the most "
        "accuracy the guard may give up. null = any deployable variant.",
    )
    brownout_to: dict[VariantKey, VariantKey] = Field(
        default_factory=dict,
        description="Variant -> the variant its traffic browns out to, overriding the derived choice (the "
        "cheapest deployable configured variant above the accuracy floor, by the registry's throughput).",
    )
    react_s: Annotated[StrictFloat, Field(ge=0.1, le=30)] = Field(
        1.0, description="Seconds between the guard's decisions (each judges the requests of the last one)."
    )
    recover_s: Annotated[StrictFloat, Field(ge=1, le=600)] = Field(
        8.0,
        description="Seconds of healthy latency before a browned-out variant takes traffic back; doubled "
        "each time taking it back overloads it again (so the guard does not flap), up to 8 times.",
    )
    headroom: Annotated[StrictFloat, Field(gt=0, lt=1)] = Field(
        0.8,
        description="Share of its measured capacity a browned-out variant keeps (and the latency, as a share "
        "of the objective, below which it counts as healthy).",
    )
    min_requests: Annotated[StrictPositiveInt, Field(le=100_000)] = Field(
        10,
        description="Requests a variant must answer within one reaction interval for its latency to count.",
    )
    min_concurrency: Annotated[StrictFloat, Field(ge=0, le=10_000)] = Field(
        4.0,
        description="Mean calls in flight to the variant (latency x rate) above which a broken objective is "
        "load; below it the variant is slow on its own (a fault for the rollout controller, not a brownout).",
    )
