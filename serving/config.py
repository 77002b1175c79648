"""The gateway configuration: one YAML file, validated by these pydantic models.

This module owns the schema of the gateway config and everything that can be decided from the
config alone: validation (every rule reports the dotted path of the field it is about), the
revision id shown by the running gateway, the check of the configured refs against the variant
registry, and :func:`diff`, which says what applying a new config costs, so that a weight change
never restarts a replica. Unknown keys are rejected so that a typo never silently falls back to
a default; numbers are strict so that ``yes`` or ``"10"`` is an error and not a 1 or a 10.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from variants.registry import Manifest, Registry, RegistryError, parse_ref, sha256_json

CONFIGS_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"
DEFAULT_PIN_HEADER = "x-slimgate-variant"
# The artifact format each backend opens (variants/backends): an override must match the
# format the variant was registered in.
_BACKEND_FORMAT = {"torch": "safetensors", "onnxruntime": "onnx", "tensorrt": "onnx"}
_RULE = "slimgate_config"
_REF_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ConfigError(ValueError):
    """A gateway config that cannot be used; the message names each bad field by its dotted path."""


def _rule(*problems: tuple[str, str]) -> PydanticCustomError:
    """A validation error about fields of the model being validated (paths relative to it).

    Raising this instead of ValueError keeps the field path structured, so that
    :func:`_format_errors` can print ``routing.weights: ...`` instead of ``routing: Value error, ...``.
    """
    reason = "; ".join(f"{path}: {msg}" for path, msg in problems)
    return PydanticCustomError(_RULE, "{reason}", {"reason": reason, "problems": problems})


StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]
StrictNonNegInt = Annotated[int, Field(strict=True, ge=0)]
StrictFloat = Annotated[float, Field(strict=True)]
# Deployment names double as pin-header values and metric labels, so they stay plain.
VariantKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", to_lower=True)]
Backend = Literal["torch", "onnxruntime", "tensorrt"]
Placement = Literal["router", "deployment"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- variants ----------------------------------------------------------------------------------
class AutoscalingSpec(_Section):
    min_replicas: StrictNonNegInt = Field(1, description="Fewest replicas kept running (0 = scale to zero).")
    max_replicas: StrictPositiveInt = Field(2, description="Most replicas the autoscaler may start.")
    target_ongoing_requests: Annotated[StrictFloat, Field(gt=0)] = Field(
        2.0, description="Ongoing requests per replica the autoscaler aims for."
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            msg = f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"
            raise _rule(("max_replicas", msg))
        return self


class BatchingSpec(_Section):
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


class ResourcesSpec(_Section):
    num_cpus: Annotated[StrictFloat, Field(gt=0)] = Field(1.0, description="CPUs reserved per replica.")
    num_gpus: Annotated[StrictFloat, Field(gt=0)] | None = Field(
        None, description="GPUs (or a fraction of one) reserved per replica; null = none."
    )


class FaultSpec(_Section):
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


# Fields of a variant that only a variant with replicas of its own (placement: deployment) can use.
_DEPLOYMENT_ONLY = ("replicas", "autoscaling", "resources", "max_queued_requests")


class VariantSpec(_Section):
    ref: str = Field(
        description="Registry reference 'name@version', or 'name' for the latest version at deploy time."
    )
    backend: Backend | None = Field(
        None, description="Backend to open the variant with; null = the backend its manifest records."
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
            raise _rule(("replicas", "set either replicas or autoscaling, not both"))
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
                f: VariantSpec.model_fields[f].get_default(call_default_factory=True)
                for f in _DEPLOYMENT_ONLY
            }
            problems = [(f, why) for f in _DEPLOYMENT_ONLY if getattr(self, f) != defaults[f]]
            if self.backend == "tensorrt":
                problems.append(("placement", "a TensorRT variant needs a GPU: use placement: deployment"))
            if problems:
                raise _rule(*problems)
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

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``serve.deployment(...).options(...)`` (no Ray import needed here)."""
        actor: dict[str, Any] = {"num_cpus": self.resources.num_cpus}
        if self.resources.num_gpus is not None:
            actor["num_gpus"] = self.resources.num_gpus
        opts: dict[str, Any] = {
            "ray_actor_options": actor,
            # Ray's default (5) would cap a replica below one full batch; allow one batch running
            # and one filling, and never so few that callers fall into Ray's retry backoff
            # (with batching off, 2 in flight would throttle a replica to a trickle).
            "max_ongoing_requests": max(32, 2 * self.batching.max_batch_size),
        }
        if self.max_queued_requests is not None:
            opts["max_queued_requests"] = self.max_queued_requests
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            opts["num_replicas"] = self.replicas or 1
        return opts


# -- routing -----------------------------------------------------------------------------------
class StickyKey(_Section):
    header: HeaderName | None = Field(None, description="Request header whose value keys the assignment.")
    json_field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")] | None = Field(
        None, description="Top-level field of the JSON request body whose value keys the assignment."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StickyKey:
        if (self.header is None) == (self.json_field is None):
            raise _rule(("header", "set exactly one of header or json_field"))
        return self


class RoutingConfig(_Section):
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
            raise _rule(("weights", f"must sum to 100, got {total}"))
        return self


# -- the rest ----------------------------------------------------------------------------------
class ShadowConfig(_Section):
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


class LimitsConfig(_Section):
    max_inputs: StrictPositiveInt = Field(64, description="Most texts in one request.")
    max_chars: StrictPositiveInt = Field(2000, description="Longest accepted text, in characters.")
    max_body_bytes: StrictPositiveInt = Field(1 << 20, description="Largest accepted request body, in bytes.")
    request_timeout_s: Annotated[StrictFloat, Field(gt=0)] = Field(
        10.0, description="Deadline of a whole request, in seconds."
    )
    top_k: StrictPositiveInt = Field(3, description="Labels with probabilities returned per text.")


class FeedbackConfig(_Section):
    retention_s: Annotated[StrictFloat, Field(gt=0, le=7 * 86400)] = Field(
        3600.0, description="How long a served answer waits for its ground-truth label, in seconds."
    )
    max_entries: Annotated[StrictPositiveInt, Field(le=10_000_000)] = Field(
        100_000, description="Most served answers remembered for feedback (oldest dropped first)."
    )


class AdminConfig(_Section):
    token_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        "SLIMGATE_ADMIN_TOKEN", description="Environment variable holding the admin token (preferred)."
    )
    token: SecretStr | None = Field(
        None, description="Inline admin token; discouraged (configs get committed). The environment wins."
    )

    def resolve_token(self, environ: Mapping[str, str] | None = None) -> str:
        """The admin token: ``$token_env`` if set and non-empty, else ``token``; ConfigError if neither."""
        env = os.environ if environ is None else environ
        value = (env.get(self.token_env) or "").strip()
        if value:
            return value
        if self.token is not None and self.token.get_secret_value().strip():
            return self.token.get_secret_value().strip()
        raise ConfigError(f"admin: no admin token configured: set ${self.token_env} (or admin.token)")


class HttpConfig(_Section):
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address clients reach the gateway on. On one host (`slimgate serve`) everything else "
        "(Ray, replicas, HAProxy's own ports) stays on loopback whatever this says.",
    )
    port: Annotated[StrictPositiveInt, Field(le=65535)] = Field(
        8000, description="TCP port of the gateway's HTTP endpoint."
    )
    grpc_port: Annotated[StrictPositiveInt, Field(le=65535)] | None = Field(
        9000,
        description="TCP port of the Open Inference Protocol's gRPC service "
        "(inference.GRPCInferenceService); null = no gRPC endpoint.",
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="How requests reach the router replicas. haproxy: Ray Serve's HAProxy ingress straight "
        "to each router replica's own HTTP server (direct ingress; several times the throughput). proxy: "
        "Ray Serve's Python HTTP proxy, for platforms without an HAProxy binary.",
    )

    @model_validator(mode="after")
    def _ports(self) -> HttpConfig:
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise _rule(("grpc_port", f"must differ from port ({self.port})"))
        return self


class AdmissionConfig(_Section):
    """Load shedding in each router replica: what cannot be served in time is refused at once."""

    latency_objective_s: Annotated[StrictFloat, Field(gt=0, le=60)] | None = Field(
        0.5,
        description="Latency the router keeps admitted requests within (its p99, measured from arrival to "
        "answer): the number of requests admitted at once adapts to it. null = only max_in_flight.",
    )
    max_in_flight: Annotated[StrictPositiveInt, Field(le=100_000)] = Field(
        64,
        description="Most requests one router replica works on at once; beyond it requests are shed. "
        "With the HAProxy ingress, HAProxy itself enforces it (read when the gateway starts).",
    )
    retry_after_s: Annotated[StrictPositiveInt, Field(le=3600)] = Field(
        1, description="Seconds a shed client is told to wait (the Retry-After header of its 503)."
    )


class RouterSpec(_Section):
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


class RolloutPolicy(_Section):
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


class GatewayConfig(_Section):
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
        limit = self.limits.request_timeout_s
        for key in self.traffic_variants():
            t = self.variants[key].timeout_s if key in self.variants else None
            if t is not None and t > limit:
                # A served call's deadline past the request's own would never fire.
                msg = f"{t} exceeds limits.request_timeout_s ({limit}) of the requests it serves"
                problems.append((f"variants.{key}.timeout_s", msg))
        if problems:
            raise _rule(*problems)
        return self

    def traffic_variants(self) -> list[str]:
        """Variant keys that receive live traffic (weight > 0), in name order."""
        return sorted(k for k, w in self.routing.weights.items() if w > 0)

    def variant_timeout_s(self, key: str) -> float:
        return self.variants[key].timeout_s or self.limits.request_timeout_s


def resolve_admin_token(cfg: GatewayConfig, environ: Mapping[str, str] | None = None) -> str:
    """The admin token of ``cfg`` (see :meth:`AdminConfig.resolve_token`)."""
    return cfg.admin.resolve_token(environ)


# -- errors, loading ---------------------------------------------------------------------------
def _join(loc: tuple[Any, ...], rel: str = "") -> str:
    parts = [str(p) for p in loc] + ([rel] if rel else [])
    return ".".join(parts) or "(top level)"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid gateway config {source}:"]
    for e in err.errors():
        if e["type"] == _RULE:
            lines.extend(f"  {_join(e['loc'], path)}: {msg}" for path, msg in e["ctx"]["problems"])
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {_join(e['loc'])}: unknown field")
        elif e["type"] == "value_error":
            lines.append(f"  {_join(e['loc'])}: {e['ctx']['error']}")
        else:
            lines.append(f"  {_join(e['loc'])}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> GatewayConfig:
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"invalid gateway config {source}: top level must be a mapping, got {kind}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Load a gateway config file (default: ``serving/configs/default.yaml``).

    A relative ``registry`` path is taken relative to the config file, so the config means the
    same thing whatever the working directory of the process (Ray workers do not share ours).
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.is_file():
        raise ConfigError(f"gateway config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"gateway config {p} is not valid YAML: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("registry"), str):
        root = Path(data["registry"]).expanduser()
        data = {**data, "registry": str(root if root.is_absolute() else (p.parent / root).resolve())}
    return parse_config(data, str(p))


# -- identity, schema --------------------------------------------------------------------------
def canonical_dict(cfg: GatewayConfig) -> dict[str, Any]:
    """The JSON form of a config with every default filled in and the inline admin token left out.

    The token is left out because the revision derived from this is shown to anyone who can read
    the gateway's status, and it must not depend on (or leak a hash of) a secret.
    """
    return cfg.model_dump(mode="json", exclude={"admin": {"token"}})


def config_revision(cfg: GatewayConfig) -> str:
    """12 hex characters identifying the effective config (defaults included, admin.token excluded)."""
    return sha256_json(canonical_dict(cfg))[:12]


def json_schema() -> dict[str, Any]:
    return GatewayConfig.model_json_schema()


# -- the registry ------------------------------------------------------------------------------
def check_against_registry(cfg: GatewayConfig, registry: Registry | None = None) -> dict[str, Manifest]:
    """Check every configured ref against the registry; return the manifest each key resolves to.

    Refused, with every problem listed: a ref not in the registry, a variant that is not deployable
    (its accuracy gate did not pass), a backend override that cannot open the variant's format, a
    TensorRT variant without a GPU, and a label table that differs from the stable variant's (the
    gateway's answers and shadow comparisons assume one label table).
    """
    reg = registry if registry is not None else Registry(cfg.registry)
    problems: list[str] = []
    manifests: dict[str, Manifest] = {}
    for key, spec in sorted(cfg.variants.items()):
        where = f"variants.{key}"
        try:
            m = reg.get(spec.name, spec.version)
        except RegistryError as err:
            problems.append(f"{where}.ref: {spec.ref!r} is not in the registry: {err}")
            continue
        manifests[key] = m
        if not m.deployable or m.gate.status != "passed":
            reason = f" ({m.gate.reason})" if m.gate.reason else ""
            gate = f"gate {m.gate.status}{reason}, deployable={m.deployable}"
            problems.append(f"{where}.ref: {m.ref} is not deployable ({gate})")
        backend = spec.backend or m.backend
        if _BACKEND_FORMAT[backend] != m.format:
            problems.append(f"{where}.backend: {backend} cannot open {m.ref}, which is stored as {m.format}")
        if backend == "tensorrt" and spec.in_router:
            problems.append(
                f"{where}.placement: {m.ref} runs on TensorRT and needs a GPU: use placement: deployment"
            )
        elif backend == "tensorrt" and not spec.resources.num_gpus:
            problems.append(f"{where}.resources.num_gpus: {m.ref} runs on TensorRT and needs a GPU")
    stable = manifests.get(cfg.routing.stable)
    if stable is not None:
        for key, m in sorted(manifests.items()):
            if m.labels != stable.labels:
                problems.append(
                    f"variants.{key}.ref: {m.ref} has a different label table from the stable variant "
                    f"{stable.ref}; the gateway serves one label table"
                )
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"gateway config does not match the registry at {reg.root}:\n{lines}")
    return manifests


def pin_refs(cfg: GatewayConfig, registry: Registry | None = None) -> GatewayConfig:
    """``cfg`` checked against the registry, with every ref pinned to the version it resolves to now.

    A gateway started or changed from a config that says ``student-int8`` then keeps serving the
    version it loaded, whatever is built later; only another apply moves it.
    """
    manifests = check_against_registry(cfg, registry)
    data = cfg.model_dump(mode="json")
    if cfg.admin.token is not None:
        data["admin"]["token"] = cfg.admin.token.get_secret_value()
    for key, m in manifests.items():
        data["variants"][key]["ref"] = m.ref
    return parse_config(data, "pinned config")


# -- what a change costs -----------------------------------------------------------------------
# batching and faults reach running replicas through Ray Serve's user_config (reconfigure()).
_ARTIFACT_FIELDS = {"ref", "backend", "threads"}
_RESTART_FIELDS = _ARTIFACT_FIELDS | {"resources", "placement"}
_RESCALE_FIELDS = {"replicas", "autoscaling"}


# How the router appears among restarted or rescaled deployments (not a valid variant key).
ROUTER_KEY = "(router)"


@dataclass(frozen=True)
class ConfigChange:
    """What applying ``new`` over ``old`` involves.

    ``restart``: variant keys whose own replicas must be replaced (``added``, ``removed``, or a change
    to what a replica loads or how it runs, or a move between the router and a deployment of its own).
    ``reload``: variants placed in the router whose artifact each router replica loads and swaps in
    live (added ones included); nothing restarts. ``rescale``: keys whose replica count or
    autoscaling changed, which Ray Serve applies in place. ``http``: the proxy address changed.
    ``paths``: every dotted field path that differs. Everything else (routing, shadow, limits,
    admin, timeouts) is applied by the router without touching a replica. A ref without a version
    ('name') follows the registry, so a new registered version changes nothing here: pin versions
    in configs that ``apply`` uses.
    """

    restart: frozenset[str]
    rescale: frozenset[str]
    reload: frozenset[str]
    added: frozenset[str]
    removed: frozenset[str]
    http: bool
    paths: tuple[str, ...]

    @property
    def lightweight(self) -> bool:
        """True when no replica is restarted (it may be rescaled) and the proxy stays as it is."""
        return not self.restart and not self.http

    @property
    def unchanged(self) -> bool:
        return not self.paths


_MISSING = object()


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _comparable(cfg: GatewayConfig) -> dict[str, Any]:
    d = cfg.model_dump(mode="json")
    token = cfg.admin.token
    # model_dump masks secrets; a changed token is still a change (the router must pick it up).
    d["admin"]["token"] = None if token is None else token.get_secret_value()
    return d


def diff(old: GatewayConfig, new: GatewayConfig) -> ConfigChange:
    a, b = dict(_flatten(_comparable(old))), dict(_flatten(_comparable(new)))
    paths = tuple(sorted(p for p in a.keys() | b.keys() if a.get(p, _MISSING) != b.get(p, _MISSING)))
    both = old.variants.keys() & new.variants.keys()
    changed = old.variants.keys() ^ new.variants.keys()
    restart = {k for k in changed if not (new.variants.get(k) or old.variants[k]).in_router}
    reload = {k for k in new.variants.keys() - old.variants.keys() if new.variants[k].in_router}
    rescale: set[str] = set()
    for key in both:
        o, n = old.variants[key], new.variants[key]
        if o.in_router and n.in_router:
            if any(getattr(o, f) != getattr(n, f) for f in _ARTIFACT_FIELDS):
                reload.add(key)
        elif any(getattr(o, f) != getattr(n, f) for f in _RESTART_FIELDS):
            restart.add(key)
            if n.in_router:
                reload.add(key)
        elif any(getattr(o, f) != getattr(n, f) for f in _RESCALE_FIELDS):
            rescale.add(key)
    if old.router.num_cpus != new.router.num_cpus:
        restart.add(ROUTER_KEY)
    elif old.router.replicas != new.router.replicas:
        rescale.add(ROUTER_KEY)
    if old.registry != new.registry:
        # Every replica loads from the registry root; a new root may hold different bytes.
        restart |= {k for k, v in new.variants.items() if not v.in_router}
        reload |= {k for k, v in new.variants.items() if v.in_router}
    rescale -= restart
    return ConfigChange(
        restart=frozenset(restart),
        rescale=frozenset(rescale),
        reload=frozenset(reload),
        added=frozenset(new.variants.keys() - old.variants.keys()),
        removed=frozenset(old.variants.keys() - new.variants.keys()),
        http=old.http != new.http,
        paths=paths,
    )
