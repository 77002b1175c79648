"""The gateway configuration, by concern.

* :mod:`serving.config.schema` and :mod:`serving.config.variant`: the pydantic models (the single
  source of truth: CLI, Ray Serve translation, Helm values and docs derive from them);
* :mod:`serving.config.base`: shared field types, errors and the change-cost tag on every field;
* :mod:`serving.config.loading`: YAML files and mappings into a config, its revision;
* :mod:`serving.config.pinning`: refs checked against the registry and pinned to versions;
* :mod:`serving.config.host`: GPU variants checked against the host ``slimgate serve`` runs on;
* :mod:`serving.config.changes`: what applying a new config costs.

The names below are the package's public surface.
"""

from serving.config.base import Change, ConfigError, changes, path_change
from serving.config.changes import ROUTER_KEY, ConfigChange, diff
from serving.config.host import check_host_gpus, gpu_variants
from serving.config.loading import (
    CONFIGS_DIR,
    DEFAULT_CONFIG,
    canonical_dict,
    config_revision,
    json_schema,
    load_config,
    parse_config,
)
from serving.config.pinning import check_against_registry, pin_refs
from serving.config.schema import (
    DEFAULT_PIN_HEADER,
    REMOVE,
    AdminConfig,
    AdmissionConfig,
    FeedbackConfig,
    GatewayConfig,
    HttpConfig,
    LimitsConfig,
    RolloutPolicy,
    RouterSpec,
    RoutingConfig,
    ShadowConfig,
    StickyKey,
)
from serving.config.slo import SloConfig
from serving.config.variant import AutoscalingSpec, BatchingSpec, FaultSpec, ResourcesSpec, VariantSpec

__all__ = [
    "CONFIGS_DIR",
    "DEFAULT_CONFIG",
    "DEFAULT_PIN_HEADER",
    "REMOVE",
    "ROUTER_KEY",
    "AdminConfig",
    "AdmissionConfig",
    "AutoscalingSpec",
    "BatchingSpec",
    "Change",
    "ConfigChange",
    "ConfigError",
    "FaultSpec",
    "FeedbackConfig",
    "GatewayConfig",
    "HttpConfig",
    "LimitsConfig",
    "ResourcesSpec",
    "RolloutPolicy",
    "RouterSpec",
    "RoutingConfig",
    "ShadowConfig",
    "SloConfig",
    "StickyKey",
    "VariantSpec",
    "canonical_dict",
    "changes",
    "check_against_registry",
    "check_host_gpus",
    "config_revision",
    "diff",
    "gpu_variants",
    "json_schema",
    "load_config",
    "parse_config",
    "path_change",
    "pin_refs",
]
