"""The schema of the gateway config: one YAML file, validated by these pydantic models.

Models and their validators only (loading is :mod:`serving.config.loading`, the registry check
:mod:`serving.config.pinning`, the change cost :mod:`serving.config.changes`). Every rule reports
the dotted path of the field it is about; unknown keys are rejected so that a typo never silently
falls back to a default; numbers are strict so that ``yes`` or ``"10"`` is an error and not a 1 or a
10. Each field's change cost is tagged with :func:`serving.config.base.changes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from serving.config.base import (
    ARTIFACT,
    LISTENER,
    LIVE,
    RESCALE,
    RESTART,
    ConfigError,
    HeaderName,
    Section,
    StrictFloat,
    StrictNonNegInt,
    StrictPositiveInt,
    VariantKey,
    changes,
    format_errors,
    rule,
)
from serving.config.cascades import cascade_stage_problems, fill_cascade_refs
from serving.config.edge import AdmissionConfig, HttpConfig
from serving.config.rollout import SpeedGate
from serving.config.slo import SloConfig
from serving.config.variant import VariantSpec

DEFAULT_PIN_HEADER = "x-slimgate-variant"
#: The value of a :meth:`GatewayConfig.with_changes` path that deletes it.
REMOVE: Any = object()


@changes(header=LIVE, json_field=LIVE)
class StickyKey(Section):
    header: HeaderName | None = Field(None, description="Request header whose value keys the assignment.")
    json_field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")] | None = Field(
        None, description="Top-level field of the JSON request body whose value keys the assignment."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyKey:
        if (self.header is None) == (self.json_field is None):
            raise rule(("header", "set exactly one of header or json_field"))
        return self


@changes(stable=LIVE, weights=LIVE, sticky_key=LIVE, pin_header=LIVE)
class RoutingConfig(Section):
    stable: VariantKey = Field(description="The variant that serves when nothing else applies.")
    weights: dict[VariantKey, Annotated[StrictNonNegInt, Field(le=100)]] = Field(
        default_factory=dict,
        description="Percent of traffic per variant; must sum to 100. Omitted = all traffic to stable.",
    )
    sticky_key: StickyKey | None = Field(
        None, description="Where the caller's identity is read so that a caller keeps its variant."
    )
    pin_header: HeaderName | None = Field(
        DEFAULT_PIN_HEADER, description="Header that forces a named variant; null disables pinning."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_weights(cls, data: Any) -> Any:
        # Filled in before validation so that an omitted split and the explicit {stable: 100}
        # are the same config (same revision, empty diff).
        if isinstance(data, dict) and "weights" not in data and isinstance(data.get("stable"), str):
            return {**data, "weights": {data["stable"]: 100}}
        return data

    @model_validator(mode="after")
    def _split(self) -> RoutingConfig:
        total = sum(self.weights.values())
        if total != 100:
            raise rule(("weights", f"must sum to 100, got {total}"))
        return self


@changes(variants=LIVE, fraction=LIVE, max_in_flight=LIVE, disagreement_samples=LIVE)
class ShadowConfig(Section):
    variants: list[VariantKey] = Field(
        default_factory=list,
        description="Variants sent a copy of sampled requests; their answers are compared, never served.",
    )
    fraction: Annotated[StrictFloat, Field(ge=0, le=1)] = Field(
        0.0, description="Share of served requests mirrored to every shadow variant."
    )
    max_in_flight: StrictPositiveInt = Field(
        32,
        description="Mirrored calls allowed at once; beyond it mirrors are dropped and counted, not queued.",
    )
    disagreement_samples: Annotated[StrictPositiveInt, Field(le=100_000)] = Field(
        200, description="Recent disagreements kept in memory for inspection (a ring buffer)."
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({k for k in v if v.count(k) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        # Order carries no meaning; sorting makes equal configs hash equal.
        return sorted(v)


@changes(max_inputs=LIVE, max_chars=LIVE, max_body_bytes=LIVE, request_timeout_s=LIVE, top_k=LIVE)
class LimitsConfig(Section):
    max_inputs: StrictPositiveInt = Field(64, description="Most texts in one request.")
    max_chars: StrictPositiveInt = Field(2000, description="Longest accepted text, in characters.")
    max_body_bytes: StrictPositiveInt = Field(1 << 20, description="Largest accepted request body, in bytes.")
    request_timeout_s: Annotated[StrictFloat, Field(gt=0)] = Field(
        10.0, description="Deadline of a whole request, in seconds."
    )
    top_k: StrictPositiveInt = Field(
        3, description="Labels with probabilities returned per text unasked (at most the task's labels)."
    )


@changes(retention_s=LIVE, max_entries=LIVE)
class FeedbackConfig(Section):
    retention_s: Annotated[StrictFloat, Field(gt=0, le=7 * 86400)] = Field(
        3600.0, description="How long a served answer waits for its ground-truth label, in seconds."
    )
    max_entries: Annotated[StrictPositiveInt, Field(le=10_000_000)] = Field(
        100_000, description="Most served answers remembered for feedback (oldest dropped first)."
    )


@changes(token_env=LIVE, token=LIVE)
class AdminConfig(Section):
    token_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        "SLIMGATE_ADMIN_TOKEN", description="Environment variable holding the admin token (preferred)."
    )
    token: SecretStr | None = Field(
        None, description="Inline admin token; discouraged (configs get committed). The environment wins."
    )


@changes(replicas=RESCALE, num_cpus=RESTART)
class RouterSpec(Section):
    """The router deployment (the ingress every request passes through)."""

    replicas: StrictPositiveInt = Field(
        1,
        description="Router replicas; each runs the variants placed in the router. Several use more cores "
        "and keep the gateway answering when a node hosting one dies.",
    )
    num_cpus: Annotated[StrictFloat, Field(gt=0)] = Field(
        0.5,
        description="CPUs Ray reserves per router replica (placement only: the threads of the variants "
        "placed in it bound what it uses).",
    )


@changes(
    interval_s=LIVE,
    window_s=LIVE,
    steps=LIVE,
    failures_to_rollback=LIVE,
    passes_per_step=LIVE,
    source_errors_to_act=LIVE,
    on_source_errors=LIVE,
    speed_gate=LIVE,
)
class RolloutPolicy(Section):
    """How the rollout controller paces candidates and how much evidence each move takes."""

    interval_s: Annotated[StrictFloat, Field(gt=0)] = Field(
        5.0, description="Seconds between analysis intervals of `slimgate controller run`."
    )
    window_s: Annotated[StrictFloat, Field(gt=0)] = Field(
        30.0, description="Seconds of metrics each interval judges (the PromQL range)."
    )
    steps: tuple[int, ...] = Field(
        (5, 25, 50, 100),
        description="Candidate traffic percents, strictly increasing, ending at 100 (reached by promotion).",
    )
    failures_to_rollback: StrictPositiveInt = Field(
        2, description="Failing intervals in a row that roll the candidate back."
    )
    passes_per_step: StrictPositiveInt = Field(
        2, description="Passing intervals in a row that move the candidate to the next step."
    )
    source_errors_to_act: StrictPositiveInt = Field(
        3, description="Intervals in a row without metrics after which on_source_errors is taken."
    )
    on_source_errors: Literal["freeze", "rollback"] = Field(
        "freeze", description="What a candidate that cannot be observed gets: held as it is, or rolled back."
    )
    speed_gate: SpeedGate = Field(
        default_factory=SpeedGate,
        description="Hold before promotion a candidate measured slower on its hardware.",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("must list at least one weight (100)")
        if any(isinstance(w, bool) or not 0 < w <= 100 for w in v):
            raise ValueError(f"every weight must be within 1..100, got {list(v)}")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"weights must be strictly increasing, got {list(v)}")
        if v[-1] != 100:
            raise ValueError(f"must end at 100 (promotion), got {list(v)}")
        return v


@changes(
    # Adding or removing a variant is priced by serving.config.changes.diff, key by key.
    variants=LIVE,
    routing=LIVE,
    shadow=LIVE,
    limits=LIVE,
    admission=LIVE,
    feedback=LIVE,
    admin=LIVE,
    # Every replica loads from the registry root; a new root may hold different bytes.
    registry=ARTIFACT,
    http=LISTENER,
    rollout=LIVE,
    router=LIVE,
    slo=LIVE,
)
class GatewayConfig(Section):
    variants: dict[VariantKey, VariantSpec] = Field(
        min_length=1, description="Deployment name -> the registry variant it serves and how it is deployed."
    )
    routing: RoutingConfig = Field(description="Which variant answers a request.")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="Mirroring traffic to compare.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request size and time limits.")
    admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig, description="Shedding load the gateway cannot serve in time."
    )
    feedback: FeedbackConfig = Field(
        default_factory=FeedbackConfig, description="Joining ground-truth labels to served answers."
    )
    admin: AdminConfig = Field(default_factory=AdminConfig, description="Access to the admin endpoints.")
    registry: Path | None = Field(
        None, description="Registry root; null = $SLIMGATE_REGISTRY or the per-user default."
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="Where the gateway listens.")
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy, description="How the rollout controller rolls back and promotes."
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The router deployment.")
    slo: SloConfig = Field(
        default_factory=SloConfig, description="Browning out to cheaper variants under load."
    )

    @model_validator(mode="before")
    @classmethod
    def _cascade_refs(cls, data: Any) -> Any:
        return fill_cascade_refs(data)

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        configured = set(self.variants)
        unknown = f"is not a configured variant (configured: {', '.join(sorted(configured))})"
        problems: list[tuple[str, str]] = []
        stable_weight = self.routing.weights.get(self.routing.stable, 0)
        if self.routing.stable not in configured:
            problems.append(("routing.stable", f"{self.routing.stable!r} {unknown}"))
        elif stable_weight <= 0:
            msg = f"must carry traffic (weight > 0), got {stable_weight}"
            problems.append(("routing.weights", f"the stable variant {self.routing.stable!r} {msg}"))
        for key in self.routing.weights:
            if key not in configured:
                problems.append((f"routing.weights.{key}", f"{key!r} {unknown}"))
        for key in self.shadow.variants:
            if key not in configured:
                problems.append(("shadow.variants", f"{key!r} {unknown}"))
            elif key == self.routing.stable:
                problems.append(
                    ("shadow.variants", f"{key!r} is the stable variant; it cannot shadow itself")
                )
        cascades = {k for k, v in self.variants.items() if v.cascade is not None}
        for key in sorted(cascades):
            c = self.variants[key].cascade
            assert c is not None
            problems.extend(cascade_stage_problems(key, c.first, c.then, configured, cascades))
        for key, to in sorted(self.slo.brownout_to.items()):
            where = f"slo.brownout_to.{key}"
            if key not in configured:
                problems.append((where, f"{key!r} {unknown}"))
            elif to not in configured:
                problems.append((where, f"{to!r} {unknown}"))
            elif to == key:
                problems.append((where, f"{key!r} cannot brown out to itself"))
        limit = self.limits.request_timeout_s
        for key in self.traffic_variants():
            t = self.variants[key].timeout_s if key in self.variants else None
            if t is not None and t > limit:
                # A served call's deadline past the request's own would never fire.
                msg = f"{t} exceeds limits.request_timeout_s ({limit}) of the requests it serves"
                problems.append((f"variants.{key}.timeout_s", msg))
        if problems:
            raise rule(*problems)
        return self

    def traffic_variants(self) -> list[str]:
        """Variant keys that receive live traffic (weight > 0), in name order."""
        return sorted(k for k, w in self.routing.weights.items() if w > 0)

    def variant_timeout_s(self, key: str) -> float:
        return self.variants[key].timeout_s or self.limits.request_timeout_s

    def with_changes(self, changes: Mapping[str, Any], source: str = "changed config") -> GatewayConfig:
        """A validated copy with each dotted path of ``changes`` set to its value (:data:`REMOVE`
        deletes the key); the inline admin token is kept, which a plain dump would mask.

        ``cfg.with_changes({"routing.weights": {"stable": 90, "canary": 10}})``. ConfigError, naming
        each bad field, when the result is not a valid config.
        """
        data = self.model_dump(mode="json")
        if self.admin.token is not None:
            data["admin"]["token"] = self.admin.token.get_secret_value()
        for path, value in changes.items():
            node = data
            *parents, leaf = path.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            if value is REMOVE:
                node.pop(leaf, None)
            else:
                node[leaf] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        try:
            return GatewayConfig.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_errors(err, source)) from None
