"""What a gateway left running on one host must withstand at its edge, and how it stops.

Slow and idle clients: a request must arrive whole within ``http.request_read_timeout_s`` (HAProxy
answers 408 and closes; in the gateway's JSON once the headers are in), a body shorter than it
declared never takes a router's slot, one client address holds at most
``http.max_connections_per_client`` connections, and a 1 MB header gets a 400. (Before: slowloris
and idle connections locked every client out; 80 unfinished bodies made 99% of normal requests 503.)

Then SIGTERM to `slimgate serve`'s process group, as systemd or a terminal sends it: the gateway
drains what it accepted, stops within seconds with status 0, leaves no process behind and frees
its port for an immediate restart. (Before: Ray's GCS died with the group and the stop waited a
minute for it, then exited 1.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest
from support import poll_until
from support.e2e import PORT, TEXT_POOL, Gateway, serving

STOP_BOUND_S = 10.0
READ_TIMEOUT_S = 2
PER_CLIENT = 100
PREDICT = "POST /v1/predict HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"


@pytest.fixture(scope="module")
def edge(registry_root, tmp_path_factory):
    gw = Gateway(f"http://127.0.0.1:{PORT}", tmp_path_factory.mktemp("edge"), registry_root)
    config = gw.write_config(
        **{"http.request_read_timeout_s": READ_TIMEOUT_S, "http.max_connections_per_client": PER_CLIENT}
    )
    with serving(config, gw):
        yield gw


def _connect(source: str = "127.0.0.1") -> socket.socket:
    """A raw client connection from ``source`` (any 127.x address reaches loopback: a client each)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", PORT))
    return sock


def _answer(sock: socket.socket, timeout_s: float) -> tuple[int, bytes, bytes]:
    """Status, headers and body of the response on ``sock`` (read to EOF: HAProxy closes)."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.lower(), body


def _json_error(head: bytes, body: bytes) -> str:
    assert b"content-type: application/json" in head, head
    return json.loads(body)["error"]["code"]


def _served(gw: Gateway, n: int) -> list[int]:
    return [gw.predict([TEXT_POOL[i % len(TEXT_POOL)]]).status_code for i in range(n)]


def test_headers_sent_too_slowly_get_a_408_and_are_closed(edge):
    sock = _connect()
    sock.sendall(PREDICT.encode())
    t0 = time.monotonic()
    try:
        for i in range(4 * READ_TIMEOUT_S):  # slowloris: a header line every half second, never done
            time.sleep(0.5)
            sock.sendall(f"x-slow-{i}: 1\r\n".encode())
    except OSError:
        pass  # closed by the gateway while still sending
    status, _, _ = _answer(sock, timeout_s=10)
    took = time.monotonic() - t0
    sock.close()
    # Headers that never end are refused by HAProxy's HTTP/1 parser, before any rule of the config
    # runs: HAProxy 2.8 writes its built-in body there, which no errorfile replaces.
    assert status == 408
    assert READ_TIMEOUT_S - 0.5 < took < READ_TIMEOUT_S + 3


def test_unfinished_bodies_take_no_router_slot(edge):
    """80 requests that declare 1,000 bytes and send 10 (more than the router's 64 slots): each
    gets a JSON 408 once its time is up, and normal requests are served meanwhile."""
    held = []
    for _ in range(80):
        sock = _connect("127.0.0.3")
        sock.sendall((PREDICT + "content-length: 1000\r\n\r\n" + '{"inputs":').encode())
        held.append(sock)
    time.sleep(0.3)
    assert _served(edge, 20) == [200] * 20
    answers = [_answer(sock, timeout_s=READ_TIMEOUT_S + 5) for sock in held]
    for sock in held:
        sock.close()
    assert {(status, _json_error(head, body)) for status, head, body in answers} == {(408, "request_timeout")}


def test_one_client_address_cannot_hold_every_connection(edge):
    held, refused = [], 0
    for _ in range(PER_CLIENT + 20):
        held.append(_connect("127.0.0.4"))
    time.sleep(0.3)
    for sock in held:
        sock.settimeout(0.05)
        try:
            refused += sock.recv(1) == b""  # closed at once by the gateway
        except TimeoutError:
            pass  # still open, waiting for a request
        except ConnectionResetError:
            refused += 1
    assert refused == 20
    assert _served(edge, 5) == [200] * 5  # another address is served meanwhile
    for sock in held:
        sock.close()


def test_a_huge_header_gets_a_400(edge):
    sock = _connect()
    with contextlib.suppress(OSError):  # refused before it was all sent
        sock.sendall((PREDICT + "x-big: " + "a" * 1_000_000 + "\r\n\r\n").encode())
    status, _, _ = _answer(sock, timeout_s=10)
    sock.close()
    assert status == 400  # HAProxy's HTTP/1 parser's own body (as for headers that never end)


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


def _listening_haproxy(gw: Gateway) -> psutil.Process:
    """The HAProxy that holds the gateway's port (not a draining one from an earlier reload)."""
    for p in psutil.Process(gw.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() == "haproxy" and any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == PORT for c in p.net_connections("tcp")
            ):
                return p
    raise AssertionError("no HAProxy holds the gateway's port")


def test_haproxy_killed_outright_is_back_in_seconds_with_its_routes_and_never_answers_404(edge):
    gw = edge
    assert gw.predict([TEXT_POOL[0]]).status_code == 200
    victim = _listening_haproxy(gw)
    keeper = victim.parent()
    stop, outcomes = threading.Event(), []
    sender = threading.Thread(target=_traffic, args=(gw.url, stop, outcomes), daemon=True)
    sender.start()
    time.sleep(1.0)
    before = len(outcomes)
    victim.kill()  # kill -9, as an SRE's probe or the OOM killer does
    t0 = time.monotonic()
    poll_until(lambda: 200 in outcomes[before + 1 :], timeout_s=20, what="a 200 after the kill")
    back = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    sender.join(timeout=20)
    # Restarted by its keeper from the config that holds the routes, not by Ray's health checks
    # (three failures 10 s apart, then a HAProxy without routes answering 404).
    assert back < 10, f"served again {back:.1f} s after the kill"
    new = _listening_haproxy(gw)
    assert new.pid != victim.pid and new.parent().pid == keeper.pid
    assert 404 not in outcomes and all(o == 200 for o in outcomes[:before]), outcomes
    # In the gap: refused at connect, or cut off in flight on the killed process; nothing else.
    assert set(outcomes) <= {200, 503, "refused", "RemoteProtocolError", "ReadError"}, outcomes
    assert outcomes[-5:] == [200] * 5


def test_sigterm_to_the_group_drains_and_stops_in_seconds_with_status_0(edge):
    """Last in the module: it stops the module's gateway."""
    gw = edge
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

    log = (gw.config_dir / "serve.log").read_text()
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
