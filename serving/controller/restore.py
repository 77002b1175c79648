"""What the controller decided, put back before a restarted gateway routes its first request.

``slimgate serve`` starts from the config file, whose weights are what the operator first wrote: a
candidate the controller rolled back would get its traffic again until the controller's next
tick, and one it had stepped back to 5% would jump to the file's 30%. Before deploying, the launcher
asks :func:`restored` for the config with the controller's last decisions in it, from the same
state the controller keeps (:mod:`.store`):

* a variant whose revision (:func:`~.candidate.revision_of`) was ever rolled back gets weight 0 and
  leaves the shadows, whatever the file says (a new revision is a new candidate, as for the
  controller itself);
* a candidate being stepped (progressing, paused or frozen) on this revision gets the weight the
  controller last set.

The stable variant takes what the others leave, as in every controller step. Each change comes
with a line saying why, which the launcher prints.
"""

from __future__ import annotations

from serving.config import GatewayConfig
from serving.controller.candidate import Phase, Rollback, SetWeight, revision_of
from serving.controller.routes import Routes, next_routes
from serving.controller.store import StateStore

_STEPPED = (Phase.PROGRESSING, Phase.PAUSED, Phase.FROZEN)


def restored(cfg: GatewayConfig, store: StateStore) -> tuple[GatewayConfig, list[str]]:
    routes, lines = Routes.of(cfg), []
    keys = tuple(cfg.variants)
    for key in keys:
        if key == routes.stable:
            continue
        revision = revision_of(cfg, key)
        if revision in store.rolled_back(key):
            if routes.weights.get(key, 0) or key in routes.shadows:
                routes = next_routes(routes, Rollback(key, "rolled back"), keys)
                lines.append(
                    f"variants.{key}: its revision {revision} was rolled back by the controller; it gets 0%"
                )
            continue
        state = store.load(key)
        if state is None or state.revision != revision or state.phase not in _STEPPED:
            continue
        if 0 < state.weight < 100 and routes.weights.get(key, 0) != state.weight:
            routes = next_routes(routes, SetWeight(key, state.weight, "restored"), keys)
            lines.append(
                f"variants.{key}: {state.weight}% as the controller last set it ({state.phase.value}), "
                "not the file's weight"
            )
    return (routes.applied_to(cfg) if lines else cfg), lines
