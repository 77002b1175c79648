"""HAProxy killed outright under load: how long are clients without a gateway, and what do they get?

    python -m benchmarks.haproxy_kill [--registry R] [--seconds 20] [--kill-at 5] [--rate 25]
                                      [--workers 4] [--kills 3]

``hey`` sends ``--workers`` x ``--rate`` requests/s to ``/v1/predict`` of ``student-int8`` for
``--seconds``; ``--kill-at`` seconds in, the HAProxy that holds the gateway's port is killed with
SIGKILL, as an SRE's probe (or the OOM killer) does; this repeats ``--kills`` times on the same
gateway. Printed per kill: the gap in answers (from the last answer before the kill to the first
after it), the requests that got no answer (refused at connect or cut off in flight: the rate
times the duration, less what hey recorded), every status answered (a 404 would be a HAProxy
without routes), and who restarted HAProxy (its keeper, or Ray's proxy restart).

Target (issue: HAProxy's death is not an outage): HAProxy back within 2 s with its routes, no 404.
Before the keeper: 75% of requests failed for 30-33 s, 400-504 of them with 404.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from typing import Any

import psutil

from benchmarks.gateway_harness import PORT, gateway_config, say, serving, write_figures
from benchmarks.load import Load, hey
from variants.hardware import describe


def listening_haproxy() -> psutil.Process:
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "haproxy" and any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == PORT for c in p.net_connections("tcp")
            ):
                return p
        except psutil.Error:
            continue
    raise SystemExit(f"no HAProxy listens on port {PORT}")


def one_kill(url: str, seconds: float, kill_at: float, rate: float, workers: int) -> dict[str, Any]:
    result: list[Load] = []
    started = time.monotonic()

    def send() -> None:
        result.append(hey(f"{url}/v1/predict", duration_s=seconds, concurrency=workers, rate_per_worker=rate))

    runner = threading.Thread(target=send)
    runner.start()
    time.sleep(kill_at)
    victim = listening_haproxy()  # now: a reload since the start would have replaced it
    keeper = victim.ppid()
    killed_at = time.monotonic() - started
    os.kill(victim.pid, signal.SIGKILL)
    runner.join()
    load = result[0]
    ok = sorted(t for t, s in load.answers if s == 200)
    before = [t for t in ok if t < killed_at]
    after = [t for t in ok if t >= killed_at]
    successor = listening_haproxy()
    sent = max(load.total, int(rate * workers * seconds))
    return {
        "killed at s": round(killed_at, 2),
        "gap s": round(after[0] - before[-1], 3) if before and after else None,
        "requests": sent,
        "unanswered": sent - load.total,
        "statuses": load.statuses(),
        "restarted by": "its keeper" if successor.ppid() == keeper else "Ray (a new proxy)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--kill-at", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=25.0, help="requests/s per hey worker")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    say(f"HAProxy killed under load, on {describe()}")
    rows = []
    with serving(gateway_config(args.registry, {"stable": {"ref": "student-int8"}})) as url:
        for i in range(args.kills):
            row = one_kill(url, args.seconds, args.kill_at, args.rate, args.workers)
            rows.append(row)
            met = row["gap s"] is not None and row["gap s"] <= 2 and 404 not in row["statuses"]
            say(
                f"  kill {i + 1}: answers stopped for {row['gap s']} s; {row['unanswered']} of "
                f"{row['requests']} requests unanswered; answered {row['statuses']}; restarted by "
                f"{row['restarted by']}; {'meets' if met else 'MISSES'} the target"
            )
    write_figures(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
