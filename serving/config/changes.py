"""What applying a new gateway config over the running one costs, read from the schema's change tags.

Each changed dotted path is priced by :func:`serving.config.base.path_change` (the highest tag
along it); this module only says whom a price falls on: a variant (its own replicas restart or
rescale, or, placed in the router, its artifact is reloaded live), the router deployment, the
listener, or nobody (the router applies it live).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from serving.config.base import Change, path_change
from serving.config.schema import GatewayConfig
from serving.config.variant import VariantSpec

# How the router appears among restarted or rescaled deployments (not a valid variant key).
ROUTER_KEY = "(router)"


@dataclass(frozen=True)
class ConfigChange:
    """What applying ``new`` over ``old`` involves.

    ``restart``: variant keys whose own replicas must be replaced (``added``, ``removed``, or a change
    to what a replica loads or how it runs, or a move between the router and a deployment of its own).
    ``reload``: variants placed in the router whose artifact each router replica loads and swaps in
    live (added ones included); nothing restarts. ``rescale``: keys whose replica count or
    autoscaling changed, which Ray Serve applies in place. ``http``: the listen address changed.
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
        """True when no replica is restarted (it may be rescaled) and the listener stays as it is."""
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


def _price_variant(
    key: str, old: VariantSpec, new: VariantSpec, cost: Change, out: dict[str, set[str]]
) -> None:
    if old.in_router and new.in_router:
        # Nothing of a deployment's own exists in the router: only a new artifact costs anything.
        if cost >= Change.ARTIFACT:
            out["reload"].add(key)
    elif cost >= Change.ARTIFACT:
        out["restart"].add(key)
        if new.in_router:
            out["reload"].add(key)  # moved into the router: it loads there
    elif cost is Change.RESCALE:
        out["rescale"].add(key)


def diff(old: GatewayConfig, new: GatewayConfig) -> ConfigChange:
    a, b = dict(_flatten(_comparable(old))), dict(_flatten(_comparable(new)))
    paths = tuple(sorted(p for p in a.keys() | b.keys() if a.get(p, _MISSING) != b.get(p, _MISSING)))
    added, removed = new.variants.keys() - old.variants.keys(), old.variants.keys() - new.variants.keys()
    out: dict[str, set[str]] = {"restart": set(), "reload": set(), "rescale": set()}
    out["restart"] |= {k for k in added | removed if not (new.variants.get(k) or old.variants[k]).in_router}
    out["reload"] |= {k for k in added if new.variants[k].in_router}
    http = False
    for path in paths:
        cost = path_change(GatewayConfig, path)
        head, _, rest = path.partition(".")
        if cost is Change.LISTENER:
            http = True
        elif head == "variants":
            key, _, field = rest.partition(".")
            if key in old.variants and key in new.variants and field:
                _price_variant(key, old.variants[key], new.variants[key], cost, out)
        elif head == "router":
            if cost >= Change.RESTART:
                out["restart"].add(ROUTER_KEY)
            elif cost is Change.RESCALE:
                out["rescale"].add(ROUTER_KEY)
        elif cost >= Change.ARTIFACT:
            # A top-level artifact setting (the registry root) is what every variant loads from.
            for key in old.variants.keys() & new.variants.keys():
                _price_variant(key, old.variants[key], new.variants[key], cost, out)
    return ConfigChange(
        restart=frozenset(out["restart"]),
        rescale=frozenset(out["rescale"] - out["restart"]),
        reload=frozenset(out["reload"]),
        added=frozenset(added),
        removed=frozenset(removed),
        http=http,
        paths=paths,
    )
