"""The rollout controller: it watches every non-stable variant and moves it forward or back.

This package owns the decisions about a candidate variant's traffic, one interval at a time:
which analysis rules judge it and how one threshold is evaluated (:mod:`.rules`), the pure step
from one candidate state to the next with the actions it implies (:mod:`.decide`), and the
persistence of candidate states and of the append-only audit log (:mod:`.store`). Nothing here
talks to Ray, HTTP or Prometheus: the metrics source, the router and the clock reach the
controller through small interfaces, so every decision can be replayed tick by tick in a test.
"""
