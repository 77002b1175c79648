"""SIGTERM to `slimgate serve`'s process group, as systemd or a terminal sends it: the gateway
drains what it accepted, stops within seconds with status 0, leaves no process behind and frees
its port for an immediate restart. (Before: Ray's GCS died with the group and the stop waited a
minute for it, then exited 1.)"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import psutil
from support.e2e import PORT, TEXT_POOL, Gateway, serving

STOP_BOUND_S = 10.0


def _traffic(url: str, stop: threading.Event, outcomes: list) -> None:
    """One request per fresh connection, so that a stop meets requests at every stage."""
    i = 0
    while not stop.is_set():
        try:
            r = httpx.post(f"{url}/v1/predict", json={"inputs": [TEXT_POOL[i % len(TEXT_POOL)]]}, timeout=15)
            outcomes.append(r.status_code)
        except httpx.ConnectError:
            outcomes.append("refused")
            time.sleep(0.02)
        except httpx.HTTPError as err:  # reset, cut short or timed out: accepted but not answered
            outcomes.append(type(err).__name__)
        i += 1


def test_sigterm_to_the_group_drains_and_stops_in_seconds_with_status_0(registry_root, tmp_path):
    gw = Gateway(f"http://127.0.0.1:{PORT}", tmp_path, registry_root)
    with serving(gw.write_config(), gw):
        assert gw.predict([TEXT_POOL[0]]).status_code == 200
        processes = psutil.Process(gw.pid).children(recursive=True)
        assert any("raylet" in p.name() or "gcs_server" in p.name() for p in processes)
        stop, outcomes = threading.Event(), []
        sender = threading.Thread(target=_traffic, args=(gw.url, stop, outcomes), daemon=True)
        sender.start()
        time.sleep(1.0)
        before = len(outcomes)
        t0 = time.monotonic()
        os.killpg(os.getpgid(gw.pid), signal.SIGTERM)
        assert gw.proc is not None
        status = gw.proc.wait(timeout=60)
        took = time.monotonic() - t0
        stop.set()
        sender.join(timeout=20)

    log = (tmp_path / "serve.log").read_text()
    assert status == 0, log[-3000:]
    assert took < STOP_BOUND_S, f"stopped after {took:.1f} s\n{log[-3000:]}"
    assert "Failed to connect to GCS" not in log
    assert before > 0 and all(o == 200 for o in outcomes[:before])
    # Every request was either answered or refused at connect: none accepted and then dropped.
    assert set(outcomes) <= {200, "refused"}, outcomes
    left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [(p.pid, p.name()) for p in left]
    with socket.socket() as s:  # as a restarted gateway binds it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", PORT))
