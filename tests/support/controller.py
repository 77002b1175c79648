"""Fakes of the rollout controller's ports: the gateway it changes and the metrics source it reads."""

from __future__ import annotations

from serving.config import parse_config
from serving.controller.rules import Measurement
from serving.controller.sources import SourceError


def controller_config(weights=None, shadow=("canary",)):
    """A stable variant and a canary (shadowed by default), in the router."""
    return parse_config(
        {
            "variants": {"stable": {"ref": "student-int8@1"}, "canary": {"ref": "student-int8-qat@1"}},
            "routing": {"stable": "stable", "weights": weights or {"stable": 100}},
            "shadow": {"variants": list(shadow), "fraction": 0.5},
        }
    )


class FakeGateway:
    def __init__(self, cfg):
        self.cfg = cfg
        self.applied = []

    def current(self):
        return self.cfg

    def set_routes(self, routes):
        self.cfg = routes.applied_to(self.cfg)
        self.applied.append(self.cfg)


class FakeSource:
    def __init__(self):
        self.error_rate = {"canary": 0.0, "stable": 0.0}
        self.down = False
        self.gauges: dict[str, list] = {}  # exported name -> [(labels, value)]

    def measure(self, variant, signals, window_s, reference):
        if self.down:
            raise SourceError("prometheus unreachable")
        return {"error_rate": Measurement(self.error_rate[variant], 100)}

    def series(self, selector):
        if self.down:
            raise SourceError("prometheus unreachable")
        return list(self.gauges.get(selector.name, []))
