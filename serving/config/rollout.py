"""The rollout policy's speed gate: whether, and how strictly, a candidate must measure faster.

A candidate that claims to be cheaper (it descends, in the registry lineage, from the stable
variant or from another configured variant) is held before promotion when its replicas measured
it slower on their own hardware than the variant it claims to improve on; see
:mod:`serving.controller.speed`. This section lives apart from :mod:`.schema` only to keep that
module small; it is the ``rollout.speed_gate`` field of :class:`~.schema.RolloutPolicy`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from serving.config.base import LIVE, Section, StrictFloat, changes


@changes(enabled=LIVE, tolerance=LIVE)
class SpeedGate(Section):
    """Hold a measured-slower candidate before promotion (operators may still promote it)."""

    enabled: bool = Field(
        True,
        description="Gate promotion on the warm-up figures each replica measured on its own hardware.",
    )
    tolerance: Annotated[StrictFloat, Field(ge=0, le=10)] = Field(
        0.1,
        description="How much slower than the configured variants it descends from a candidate may "
        "measure and still be promoted: 0.1 = batch-1 p50 at most 1.1x, throughput at least 1/1.1x.",
    )
