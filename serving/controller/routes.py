"""What the rollout controller changes on the gateway: its routes (stable variant, weights, shadows).

Like Flagger's router interface (``GetRoutes`` / ``SetRoutes``), the controller's port to the
gateway speaks in routes, never whole configs: whatever else the running config holds (variants,
limits, the admin token) the controller cannot touch. :func:`next_routes` is the pure step from
one traffic action to the routes after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from serving.config import GatewayConfig
from serving.controller.candidate import Action, Promote, Rollback, SetWeight


@dataclass(frozen=True)
class Routes:
    """Which variant is stable, each variant's percent of traffic, and which are mirrored."""

    stable: str
    weights: Mapping[str, int]
    shadows: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, cfg: GatewayConfig) -> Routes:
        return cls(cfg.routing.stable, dict(cfg.routing.weights), tuple(cfg.shadow.variants))

    def applied_to(self, cfg: GatewayConfig) -> GatewayConfig:
        """``cfg`` routed this way (validated: ConfigError names what the config does not allow)."""
        return cfg.with_changes(
            {
                "routing.stable": self.stable,
                "routing.weights": dict(self.weights),
                "shadow.variants": list(self.shadows),
            },
            "routes set by the controller",
        )


class GatewayPort(Protocol):
    """The controller's view of the gateway: the config it runs (read), the routes it takes (write)."""

    def current(self) -> GatewayConfig: ...

    def set_routes(self, routes: Routes) -> None: ...


def next_routes(routes: Routes, action: Action, variants: tuple[str, ...]) -> Routes:
    """The routes after one traffic action; the stable variant takes whatever the others leave."""
    weights = dict(routes.weights)
    if isinstance(action, SetWeight):
        weights[action.variant] = action.weight
        shadows = routes.shadows
    elif isinstance(action, Rollback):
        weights[action.variant] = 0
        shadows = tuple(v for v in routes.shadows if v != action.variant)
    elif isinstance(action, Promote):
        weights = {k: (100 if k == action.variant else 0) for k in variants}
        return Routes(action.variant, weights, tuple(v for v in routes.shadows if v != action.variant))
    else:
        return routes
    weights[routes.stable] = 100 - sum(w for k, w in weights.items() if k != routes.stable)
    return Routes(routes.stable, weights, shadows)
