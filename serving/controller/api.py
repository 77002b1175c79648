"""The controller's HTTP surface: its /metrics, a health check, and the authenticated admin API.

The admin API does by hand what ``slimgate promote | abort | pause | resume`` does, through the
same :meth:`Controller.operate` (one lock with the analysis loop, so an operator action racing
an automatic one settles the same way: rollback wins). It lives in the controller, not the
router, because the controller owns the rollout state; the router only serves traffic.

Routes (admin ones need ``Authorization: Bearer <token>``, the gateway's admin token):

* ``GET  /metrics``, ``GET /healthz``
* ``GET  /admin/candidates``: every tracked candidate's state
* ``GET  /admin/audit?limit=N``: the newest audit entries, oldest first
* ``POST /admin/candidates/<variant>/<promote|abort|pause|resume>``, optional JSON body
  ``{"actor": "name"}`` (recorded as ``api:name``)

Errors are ``{"error": {"code", "message"}}`` with 4xx for a caller's mistake (401 token,
404 unknown variant or route, 405 method, 409 a transition the phase forbids, 400/413 body)
and 503 when the gateway itself cannot be reached.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from serving.controller.runner import Controller
from serving.controller.service import ControllerMetrics
from serving.errors_and_auth import AdminToken, ApiError, render

log = logging.getLogger("slimgate.controller")
COMMANDS = ("promote", "abort", "pause", "resume")
MAX_BODY = 4096


def entry_json(e: Any) -> dict[str, Any]:
    d = asdict(e)
    for key in ("weights_before", "weights_after", "signals"):
        d[key] = dict(d[key])
    return d


class ControllerAPI:
    """Serves the routes above on ``host:port`` from a daemon thread (``port=0``: any free port)."""

    def __init__(self, ctl: Controller, metrics: ControllerMetrics, host: str = "127.0.0.1", port: int = 0):
        self.ctl, self.metrics = ctl, metrics
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api._dispatch(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                api._dispatch(self, "POST")

            def do_PUT(self) -> None:  # noqa: N802
                api._dispatch(self, "PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                api._dispatch(self, "DELETE")

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("api: " + fmt, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: close() returns in milliseconds instead of half a second.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> ControllerAPI:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- request handling ------------------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts == ["metrics"]:
                self._only(method, "GET")
                return self._send(h, 200, self.metrics.exposition(), "text/plain; version=0.0.4")
            if parts == ["healthz"]:
                self._only(method, "GET")
                return self._json(h, 200, {"ok": True})
            if parts[:1] != ["admin"]:
                raise ApiError(404, "not_found", f"no route {url.path}")
            self._authorize(h)
            if parts == ["admin", "candidates"]:
                self._only(method, "GET")
                return self._json(h, 200, {"candidates": [asdict(s) for s in self.ctl.store.all()]})
            if parts == ["admin", "audit"]:
                self._only(method, "GET")
                limit = self._limit(parse_qs(url.query).get("limit", ["50"])[-1])
                return self._json(
                    h, 200, {"entries": [entry_json(e) for e in self.ctl.store.entries(limit=limit)]}
                )
            if len(parts) == 4 and parts[1] == "candidates" and parts[3] in COMMANDS:
                self._only(method, "POST")
                actor = self._actor(h)
                state = self.ctl.operate(parts[2], parts[3], actor=f"api:{actor}")
                return self._json(h, 200, {"candidate": asdict(state)})
            raise ApiError(404, "not_found", f"no route {url.path}")
        except Exception as err:  # noqa: BLE001 - rendered by errors_and_auth (no internals in a 5xx)
            status, headers, body = render(err, f"controller API {method} {url.path}")
            self._send(h, status, body, "application/json", headers)

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise ApiError(405, "method_not_allowed", f"use {allowed} here, not {method}")

    @staticmethod
    def _limit(text: str) -> int:
        if not text.isdigit() or not 0 < int(text) <= 10_000:
            raise ApiError(400, "invalid_field", f"limit must be an integer from 1 to 10000, got {text!r}")
        return int(text)

    def _authorize(self, h: BaseHTTPRequestHandler) -> None:
        cfg = self.ctl.last_config or self.ctl.gateway.current()
        AdminToken.of(cfg.admin).check(h.headers.get("authorization"))

    @staticmethod
    def _actor(h: BaseHTTPRequestHandler) -> str:
        length = h.headers.get("content-length") or "0"
        if not length.isdigit():
            raise ApiError(400, "invalid_body", "content-length must be a number")
        if int(length) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body exceeds {MAX_BODY} bytes")
        raw = h.rfile.read(int(length)) if int(length) else b""
        if not raw.strip():
            return "operator"
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "invalid_json", "body is not valid JSON") from None
        actor = body.get("actor", "operator") if isinstance(body, dict) else None
        if not isinstance(actor, str) or not 0 < len(actor) <= 64 or not actor.isprintable():
            raise ApiError(400, "invalid_field", "actor must be a printable string of 1 to 64 characters")
        return actor

    def _json(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        self._send(h, status, json.dumps(body, default=str).encode(), "application/json")

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        h.send_response(status)
        h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
