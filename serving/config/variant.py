"""The schema of one served variant (``variants.<key>``): what it loads, where it runs, how it scales.

Models and their validators only; each field's change cost is tagged with
:func:`serving.config.base.changes`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from serving.config.base import (
    ARTIFACT,
    LIVE,
    RESCALE,
    RESTART,
    Section,
    StrictFloat,
    StrictNonNegInt,
    StrictPositiveInt,
    VariantKey,
    changes,
    rule,
)
from variants.registry import RegistryError, parse_ref

Backend = Literal["torch", "onnxruntime", "tensorrt"]
Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16", "bf16"]
Placement = Literal["router", "deployment"]
_REF_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@changes(min_replicas=RESCALE, max_replicas=RESCALE, target_ongoing_requests=RESCALE)
class AutoscalingSpec(Section):
    min_replicas: StrictNonNegInt = Field(1, description="Fewest replicas kept running (0 = scale to zero).")
    max_replicas: StrictPositiveInt = Field(2, description="Most replicas the autoscaler may start.")
    target_ongoing_requests: Annotated[StrictFloat, Field(gt=0)] = Field(
        2.0, description="Ongoing requests per replica the autoscaler aims for."
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            msg = f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"
            raise rule(("max_replicas", msg))
        return self


@changes(max_batch_size=LIVE, batch_wait_timeout_s=LIVE, max_concurrent_batches=LIVE)
class BatchingSpec(Section):
    max_batch_size: StrictPositiveInt = Field(16, description="Most texts one backend call runs together.")
    batch_wait_timeout_s: Annotated[StrictFloat, Field(ge=0, le=1)] = Field(
        0.0,
        description="Longest a request waits for others to fill a batch, in seconds. 0 = no waiting: a "
        "batch holds whatever queued while the previous one ran (no added latency at low load).",
    )
    max_concurrent_batches: Annotated[StrictPositiveInt, Field(le=64)] = Field(
        1,
        description="Backend calls of this variant running at once in one replica (each on a thread).",
    )


@changes(num_cpus=RESTART, num_gpus=RESTART)
class ResourcesSpec(Section):
    num_cpus: Annotated[StrictFloat, Field(gt=0)] = Field(1.0, description="CPUs reserved per replica.")
    num_gpus: Annotated[StrictFloat, Field(gt=0)] | None = Field(
        None, description="GPUs (or a fraction of one) reserved per replica; null = none."
    )


@changes(delay_ms=LIVE, error_rate=LIVE, flip_rate=LIVE)
class FaultSpec(Section):
    """Deliberate degradation, for drills and demos of fallback, shadow comparison and rollback."""

    delay_ms: Annotated[StrictFloat, Field(ge=0, le=60_000)] = Field(
        0.0, description="Extra latency added to every call of this variant, in milliseconds."
    )
    error_rate: Annotated[StrictFloat, Field(ge=0, le=1)] = Field(
        0.0, description="Share of calls that fail with an injected error."
    )
    flip_rate: Annotated[StrictFloat, Field(ge=0, le=1)] = Field(
        0.0, description="Share of texts whose answer is replaced by the next label (a wrong model)."
    )

    @property
    def active(self) -> bool:
        return bool(self.delay_ms or self.error_rate or self.flip_rate)


@changes(first=ARTIFACT, then=ARTIFACT, threshold=LIVE, budget_ms=LIVE)
class CascadeSpec(Section):
    """A confidence cascade of two configured variants, calibrated by the registry's cascade entry."""

    first: VariantKey = Field(description="The variant that answers every text (the cheap one).")
    then: VariantKey = Field(description="The variant that answers the texts the first stage is unsure of.")
    threshold: Annotated[StrictFloat, Field(ge=0, le=1)] | None = Field(
        None,
        description="Texts whose first-stage confidence is below this go to the second stage; null = the "
        "threshold the registry's cascade entry was calibrated to on the validation split.",
    )
    budget_ms: Annotated[StrictFloat, Field(gt=0, le=60_000)] = Field(
        250.0,
        description="Longest the second stage may take, in milliseconds. Past it (or when the second stage "
        "fails) the first stage's answer is returned, marked degraded and counted: a cascade is never "
        "slower than its budget and never fails because its second stage does.",
    )


# Fields of a variant that only a variant with replicas of its own (placement: deployment) can use.
DEPLOYMENT_ONLY = ("replicas", "autoscaling", "resources", "max_queued_requests")
# Fields only the router reads (a cascade is composed there and never has replicas of its own).
ROUTER_ONLY = ("cascade",)


@changes(
    ref=ARTIFACT,
    backend=ARTIFACT,
    device=ARTIFACT,
    precision=ARTIFACT,
    threads=ARTIFACT,
    placement=RESTART,
    resources=RESTART,
    replicas=RESCALE,
    autoscaling=RESCALE,
    # Ray Serve applies these to running replicas (user_config, max_queued_requests) or the router
    # reads them per call.
    batching=LIVE,
    max_queued_requests=LIVE,
    timeout_s=LIVE,
    faults=LIVE,
    progressive=LIVE,
    # The router composes a cascade from its stages' clients on every config: nothing reloads.
    cascade=LIVE,
)
class VariantSpec(Section):
    ref: str = Field(
        description="Registry reference 'name@version', or 'name' for the latest version at deploy time. "
        "For a cascade: its registry entry, by default 'cascade-<first>-to-<then>' of its stages' names."
    )
    cascade: CascadeSpec | None = Field(
        None,
        description="Serve a confidence cascade of two other configured variants instead of one artifact: "
        "routed, pinned, shadowed, promoted and rolled back like any variant. It runs in the router "
        "(its stages run where they are placed).",
    )
    backend: Backend | None = Field(
        None, description="Backend to open the variant with; null = the backend its manifest records."
    )
    device: Device | None = Field(
        None,
        description="Where a torch variant runs: cpu, or cuda (placement: deployment with "
        "resources.num_gpus); null = the device its manifest records. Never a silent fallback: a "
        "variant asked to run on cuda where there is no GPU fails to load.",
    )
    precision: Precision | None = Field(
        None,
        description="What a torch variant computes in, cast when it is loaded: fp32, bf16, or fp16 "
        "(cuda only); null = the precision its manifest records.",
    )
    placement: Placement = Field(
        "router",
        description="Where the variant runs. router: inside every router replica, answered in process "
        "with no extra hop (the fast path for small CPU variants; it scales with router.replicas and "
        "a new artifact is swapped in live). deployment: its own Ray Serve application reached "
        "through a handle (for large or GPU variants, or to scale and restart it on its own).",
    )
    replicas: StrictPositiveInt | None = Field(
        None,
        description="Fixed replica count (placement: deployment); exclusive with autoscaling. "
        "Neither set = 1 replica.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Replica range driven by load (placement: deployment); exclusive with replicas."
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Server-side request batching.")
    threads: StrictPositiveInt = Field(1, description="Intra-op threads of the backend in each replica.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Per-replica reservation (placement: deployment)."
    )
    max_queued_requests: Annotated[StrictPositiveInt, Field(le=100_000)] | None = Field(
        None,
        description="Calls waiting for a replica beyond which Ray sheds them (placement: deployment); "
        "null = Ray's default (unbounded). A shed call is answered like a failed one: fallback to stable.",
    )
    timeout_s: Annotated[StrictFloat, Field(gt=0)] | None = Field(
        None, description="Deadline of one call to this variant; null = limits.request_timeout_s."
    )
    faults: FaultSpec = Field(
        default_factory=FaultSpec, description="Injected latency, errors or wrong answers (drills only)."
    )
    progressive: StrictBool = Field(
        True,
        description="The rollout controller may advance this candidate through rollout.steps on passing "
        "analysis; false = it keeps the weight set here (still rolled back on failures) until an "
        "operator promotes it.",
    )

    @field_validator("ref")
    @classmethod
    def _ref_ok(cls, v: str) -> str:
        try:
            name, version = parse_ref(v)
        except RegistryError as err:
            raise ValueError(str(err)) from None
        if not _REF_NAME_RE.match(name):
            raise ValueError(f"bad variant name {name!r}: use lower-case letters, digits and '-'")
        if version is not None and version < 1:
            raise ValueError(f"version must be >= 1, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> VariantSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise rule(("replicas", "set either replicas or autoscaling, not both"))
        if self.placement == "router":
            # These only mean something for a variant with replicas of its own; silently ignoring
            # them would let a config promise a GPU or a replica count that nothing provides.
            why = (
                "only a variant with placement: deployment has replicas of its own; a variant "
                "placed in the router runs in every router replica (router.replicas, router.num_cpus)"
            )
            # Compared with the defaults rather than "was it given": a dumped config (defaults filled
            # in) must parse back to itself.
            defaults = {
                f: VariantSpec.model_fields[f].get_default(call_default_factory=True) for f in DEPLOYMENT_ONLY
            }
            problems = [(f, why) for f in DEPLOYMENT_ONLY if getattr(self, f) != defaults[f]]
            if self.backend == "tensorrt":
                problems.append(("placement", "a TensorRT variant needs a GPU: use placement: deployment"))
            if self.device == "cuda":
                problems.append(
                    ("placement", "a variant on device cuda needs a GPU: use placement: deployment")
                )
            if problems:
                raise rule(*problems)
        elif self.device == "cuda" and not self.resources.num_gpus:
            # Without a GPU reservation Ray could place the replica on a node without one.
            raise rule(("resources.num_gpus", "a variant on device cuda needs a GPU: set num_gpus (e.g. 1)"))
        if self.device == "cpu" and self.precision == "fp16":
            raise rule(("precision", "fp16 runs on device cuda only; on cpu use fp32 or bf16"))
        if self.cascade is not None:
            why = "belongs to the cascade's stages, not to the cascade"
            problems = [(f, why) for f in ("backend", "device", "precision") if getattr(self, f) is not None]
            if self.placement != "router":
                problems.append(
                    ("placement", "a cascade runs in the router; its stages run where they are placed")
                )
            if problems:
                raise rule(*problems)
        return self

    @property
    def name(self) -> str:
        return parse_ref(self.ref)[0]

    @property
    def version(self) -> int | None:
        return parse_ref(self.ref)[1]

    @property
    def in_router(self) -> bool:
        return self.placement == "router"
