"""On one host, keep the gRPC servers inside Ray's worker processes on loopback.

Ray binds its own servers to the node IP, which ``slimgate serve`` makes 127.0.0.1
(:mod:`serving.ray_env`). Ray Serve 2.60 is the exception: every replica starts an
inter-deployment gRPC server on ``[::]:0`` and, in direct-ingress mode, its gRPC ingress on
``[::]:<port>``, with no setting for the address (``ray/serve/_private/replica.py``,
``grpc_util.py``). :func:`install` runs in every Ray worker as its process setup hook and turns a
gRPC server's request for every interface into a request for loopback, which is all a one-host
cluster needs (HAProxy and the other replicas reach them at the node IP, 127.0.0.1).

It is installed only by ``slimgate serve`` (``SLIMGATE_LOOPBACK_ONLY=1``), never on a cluster,
where replicas on other nodes must reach these servers. ``tests/e2e`` holds the result: after
``slimgate serve`` starts, no socket of the gateway listens beyond loopback.
"""

from __future__ import annotations

import os

WILDCARDS = ("[::]:", "0.0.0.0:", ":")
SETUP_HOOK = "serving.loopback.install"


def to_loopback(address: str) -> str:
    """``[::]:N``, ``0.0.0.0:N`` or ``:N`` -> ``127.0.0.1:N``; any other address is left as it is."""
    for prefix in WILDCARDS:
        if address.startswith(prefix):
            return "127.0.0.1:" + address[len(prefix) :]
    return address


def install() -> None:
    if os.environ.get("SLIMGATE_LOOPBACK_ONLY") != "1":
        return
    from grpc.aio import _server

    original = _server.Server.add_insecure_port
    if getattr(original, "_slimgate_loopback", False):
        return

    def add_insecure_port(self, address: str) -> int:
        return original(self, to_loopback(address))

    add_insecure_port._slimgate_loopback = True  # type: ignore[attr-defined]
    _server.Server.add_insecure_port = add_insecure_port
