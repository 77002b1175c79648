"""The gateway on a multi-node Ray cluster (a head and two workers on this machine), under faults.

Ray's own cluster test utility starts real raylets, one per node, each with its own resources
and metrics port. The gateway is deployed onto it with ``slimgate deploy`` through the head's
dashboard, as it would be onto a cluster started with ``ray start`` or by KubeRay. Variant replicas
(two per variant) and the two router replicas are spread over the nodes by Ray Serve.

* A worker node hosting a candidate replica is killed under steady load: the gateway keeps
  answering from the remaining replicas (or the stable variant), client errors stay within the
  requests that can be in flight at that moment, and full capacity returns when a node rejoins.
* The rollout controller is killed mid-rollout: serving goes on, and once it is back it carries
  on from its persisted state to the same outcome.

Each fault's figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import poll_until

from serving import ray_rest
from serving.config import HttpConfig
from serving.ray_env import ingress_env
from serving.tools.drill import SteadyLoad

# Ray's test cluster leaves a few log files of its nodes open; that is Ray's, not ours to fail on.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)

DASHBOARD_PORT = 8266
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
HTTP_PORT = 18300
METRICS_PORTS = iter(range(18381, 18399))
AGENT_PORTS = iter(range(52401, 52499, 3))
PROMETHEUS_PORT = 19390
CONTROLLER_PORT = 19312
TOKEN = "multinode-admin-token"
TEXTS = [
    "a tall perennial woody plant having a main trunk and branches",
    "a person who plays the violin",
    "a building where people live",
    "the act of running quickly",
    "a sweet food made from sugar",
]
# How long the steady load runs around each fault (load durations, not synchronisation): before a
# worker is killed, after it (how long the cluster stays short of capacity), the grace after which
# no error may occur, and after full capacity is back; how long the controller stays down.
BASELINE_S = 5
AFTER_KILL_S = 30
GRACE_S = 15
AFTER_CAPACITY_S = 3
CONTROLLER_DOWN_S = 15


def _node_args() -> dict:
    # Every node gets its own agent and metrics ports, so that several raylets share one machine.
    agent = next(AGENT_PORTS)
    return {
        "num_cpus": 1,
        "metrics_export_port": next(METRICS_PORTS),
        "dashboard_agent_listen_port": agent,
        "metrics_agent_port": agent + 1,
        "runtime_env_agent_port": agent + 2,
        # Every node starts in the gateway's ingress mode (HAProxy), as `slimgate config ray-env`
        # tells an operator to start a cluster; the router replicas' direct-ingress ports stay on
        # this machine's loopback.
        "env_vars": {
            "SLIMGATE_ADMIN_TOKEN": TOKEN,
            "RAY_USAGE_STATS_ENABLED": "0",
            **ingress_env(HttpConfig()),
        },
    }


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    head = {
        **_node_args(),
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": DASHBOARD_PORT,
        "gcs_server_port": 6391,
        "ray_client_server_port": 10011,
    }
    c = Cluster(initialize_head=True, head_node_args=head)
    workers = [c.add_node(**_node_args()) for _ in range(2)]
    c.wait_for_nodes()
    failures: list[ray_rest.ControlError] = []

    def dashboard_answers() -> bool:
        try:
            ray_rest.status(DASHBOARD)
        except ray_rest.ControlError as err:
            failures.append(err)
            return False
        return True

    # The dashboard answers a little after the head node is up.
    poll_until(
        dashboard_answers,
        timeout_s=120,
        every_s=1,
        what="the Ray dashboard to answer",
        diagnose=lambda: repr(failures[-1]) if failures else "",
    )
    yield c, workers
    c.shutdown()


def _config(registry: Path, tmp: Path, **extra) -> Path:
    cfg = {
        "variants": {
            # 0.5 CPU a replica: the 3-CPU cluster holds everything, two nodes cannot.
            # Deployments of their own, so that their replicas spread over the nodes and one dies
            # with its node.
            "stable": {
                "ref": "student-int8",
                "placement": "deployment",
                "replicas": 2,
                "resources": {"num_cpus": 0.5},
            },
            "canary": {
                "ref": "student-int8-qat",
                "placement": "deployment",
                "replicas": 2,
                "resources": {"num_cpus": 0.5},
            },
        },
        "routing": {"stable": "stable", "weights": {"stable": 70, "canary": 30}},
        "router": {"replicas": 2, "num_cpus": 0.1},
        "registry": str(registry),
        "http": {"host": "127.0.0.1", "port": HTTP_PORT, "grpc_port": None},
        **extra,
    }
    path = tmp / f"gateway-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _slimgate(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN},
    )
    assert proc.returncode == 0, f"slimgate {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _replicas(variant: str) -> list[dict]:
    apps = ray_rest.status(DASHBOARD).get("applications") or {}
    deps = (apps.get(f"variant-{variant}") or {}).get("deployments") or {}
    return [r for d in deps.values() for r in d.get("replicas", [])]


def _running(variant: str) -> list[dict]:
    return [r for r in _replicas(variant) if r.get("state") == "RUNNING"]


@pytest.fixture(scope="module")
def deployed(cluster, registry_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    _slimgate("deploy", str(_config(registry_root, tmp)), "--dashboard", DASHBOARD)
    nodes = {r["node_id"] for v in ("stable", "canary") for r in _running(v)}
    print(f"\nvariant replicas on {len(nodes)} nodes")
    return tmp


def test_replicas_are_spread_over_the_nodes(cluster, deployed):
    _c, workers = cluster
    on = {r["node_id"] for v in ("stable", "canary") for r in _running(v)}
    assert len(on) >= 2, on
    assert len(_running("canary")) == 2 and len(_running("stable")) == 2


def test_killing_a_worker_that_hosts_a_candidate_replica(cluster, deployed):
    c, workers = cluster
    by_id = {w.node_id: w for w in workers}
    victim_id = next(r["node_id"] for r in _running("canary") if r["node_id"] in by_id)
    victim = by_id[victim_id]
    threads = 4
    with SteadyLoad(f"http://127.0.0.1:{HTTP_PORT}", TEXTS, rate=20, threads=threads) as load:
        time.sleep(BASELINE_S)  # load before the fault
        before = len(load.window(0))
        assert load.errors(0) == 0, "errors before any fault"
        killed_at = time.monotonic()
        c.remove_node(victim, allow_graceful=False)
        workers.remove(victim)
        time.sleep(AFTER_KILL_S)  # load while the cluster is a node short
        errors = load.errors(killed_at)
        served = len(load.window(killed_at))
        late = load.errors(killed_at + GRACE_S)
        # The cluster is short of CPUs for the lost replicas until a node joins again.
        assert len(_running("canary")) < 2 or len(_running("stable")) < 2
        rejoined_at = time.monotonic()
        workers.append(c.add_node(**_node_args()))
        poll_until(
            lambda: len(_running("canary")) >= 2 and len(_running("stable")) >= 2,
            timeout_s=240,
            every_s=2,
            what="two running replicas of each variant again",
            diagnose=lambda: repr((_replicas("canary"), _replicas("stable"))),
        )
        capacity_s = time.monotonic() - rejoined_at
        time.sleep(AFTER_CAPACITY_S)  # load at full capacity again
        after_errors = load.errors(rejoined_at)
    print(
        f"\nworker killed: {errors} client errors of {served} requests in the {AFTER_KILL_S} s after "
        f"(at most {threads} can be in flight; {before} served before); "
        f"none after {GRACE_S} s: {late == 0}; "
        f"full capacity {capacity_s:.1f} s after a node rejoined, {after_errors} errors meanwhile"
    )
    # Only requests in flight on the dead node may fail: the clients have at most `threads` out.
    assert errors <= threads
    assert late == 0 and after_errors == 0
    assert served > 100  # the gateway kept serving


def test_killing_the_controller_mid_rollout(cluster, deployed, registry_root):
    from serving.controller.store import StateStore
    from serving.ops.local_prometheus import LocalPrometheus

    c, workers = cluster
    nodes = [c.head_node, *workers]
    targets = [f"127.0.0.1:{n.metrics_export_port}" for n in nodes]
    prom = LocalPrometheus(deployed / "prom", PROMETHEUS_PORT, targets, scrape_s=1.0)
    state = deployed / "controller.db"
    rollout = {"interval_s": 2.0, "window_s": 10.0, "passes_per_step": 2, "steps": [40, 60, 100]}
    _slimgate(
        "apply",
        str(_config(registry_root, deployed, rollout=rollout)),
        "--dashboard",
        DASHBOARD,
        "--state",
        str(state),
    )

    def start(log_name: str):
        log = open(deployed / log_name, "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.cli",
                "controller",
                "run",
                "--prometheus",
                prom.url,
                "--dashboard",
                DASHBOARD,
                "--state",
                str(state),
                "--metrics-port",
                str(CONTROLLER_PORT),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN},
            start_new_session=True,
        )
        return proc, log

    def phase() -> tuple[str, int] | None:
        with StateStore(state) as store:
            s = store.load("canary")
        return None if s is None else (s.phase.value, s.weight)

    try:
        with SteadyLoad(f"http://127.0.0.1:{HTTP_PORT}", TEXTS, rate=20, threads=4) as load:
            proc, log = start("controller-1.log")
            poll_until(
                lambda: (phase() or ("", 0))[1] >= 40,
                timeout_s=180,
                every_s=1,
                what="the rollout to reach 40%",
                diagnose=lambda: (deployed / "controller-1.log").read_text()[-3000:],
            )
            os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: the state file is all that is left
            proc.wait()
            log.close()
            down_at, held = time.monotonic(), phase()
            time.sleep(CONTROLLER_DOWN_S)  # load while the controller is down
            down_errors, down_served = load.errors(down_at), len(load.window(down_at))
            assert phase() == held  # nothing moves while it is down
            proc, log = start("controller-2.log")
            poll_until(
                lambda: (phase() or ("", 0))[0] == "promoted",
                timeout_s=180,
                every_s=1,
                what="the restarted controller to promote the canary",
                diagnose=lambda: (deployed / "controller-2.log").read_text()[-3000:],
            )
            back_s = time.monotonic() - down_at - CONTROLLER_DOWN_S
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
        with StateStore(state) as store:
            actions = [(e.actor, e.action) for e in store.entries() if e.variant == "canary"]
        print(
            f"\ncontroller killed at {held}: {down_errors} client errors of {down_served} requests while "
            f"it was down; promoted {back_s:.1f} s after it came back; audit {actions}"
        )
        assert down_errors == 0 and down_served > 100
        # Tracked once: the second controller carried on from the persisted state.
        assert [a for _, a in actions].count("track") == 1 and actions[-1] == ("controller", "promote")
        rows = json.loads(_slimgate("status", "--dashboard", DASHBOARD, "--json"))["variants"]
        assert {r["variant"]: r["role"] for r in rows}["canary"] == "stable"
    finally:
        prom.stop()
