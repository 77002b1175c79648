"""Reading a gateway config: YAML files and mappings into a validated :class:`GatewayConfig`; its identity.

Errors are :class:`ConfigError` with every problem named by its dotted path. The revision shown by a
running gateway is a hash of the config with every default filled in and the inline token left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.config.base import ConfigError, format_errors
from serving.config.schema import GatewayConfig
from variants.registry import sha256_json

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"


def parse_config(data: Any, source: str = "<dict>") -> GatewayConfig:
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"invalid gateway config {source}: top level must be a mapping, got {kind}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


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
